"""The deferred report rollup (ledger/rollup_fold.py, ledger/rollup_mark.py): PostgreSQL's
settles note their charges, SQLite's mark them for a fold above a watermark; folds add them to
the rollup exactly once, whoever folds, whenever, whatever crashes, on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.errors import ConfigurationError, StorageError
from kling_cost.ledger import Ledger, copy_ledger, open_ledger
from kling_cost.reports import report
from tests.helpers import FakeClock

GROUPS = ("day,model", "model", "project", "status")


def _count(led: Ledger, sql: str) -> int:
    with led.transaction(snapshot=True) as cur:  # a read: never waits for a fold's write lock
        cur.execute(sql)
        return int(cur.fetchone()[0] or 0)


_WAITING = {
    "postgresql": "SELECT COUNT(*) FROM rollup_pending",
    "sqlite": "SELECT COUNT(*) FROM charges WHERE rollup_deferred = 1 AND id > COALESCE("
    "(SELECT value FROM report_rollup_meta WHERE name = 'folded_upto'), 0)",
}


def _waiting(led: Ledger) -> int:
    """How many charges wait for a fold (PostgreSQL: noted; SQLite: marked, above the watermark)."""
    return _count(led, _WAITING[led.backend.dialect])


def _spend(led: Ledger, clock: FakeClock, n: int, *, scopes: tuple[str, ...] = ("project:a",)) -> None:
    for i in range(n):
        res = led.reserve("2", list(scopes), metadata={"model": f"m{i % 3}"})
        if i % 5 == 4:
            led.release(led.attach_task(res, f"t-{i}"))  # a failed task: a charge of 0
        else:
            led.commit(res, actual=f"1.{i % 10}")
        clock.advance(minutes=37)


def _agrees(led: Ledger) -> None:
    """Every rollup report is the raw charges' report."""
    for group in GROUPS:
        fast = report(led, group, tz="UTC", source="rollup")
        slow = report(led, group, tz="UTC", source="charges")
        assert fast.rows == slow.rows and fast.totals == slow.totals, group


def test_each_charge_waits_for_a_fold_and_the_first_report_folds_them_once(
    ledger_url: str, clock: FakeClock
) -> None:
    with open_ledger(ledger_url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 12)
        charges = _count(led, "SELECT COUNT(*) FROM charges")
        assert charges == 12
        assert _waiting(led) == charges
        assert _count(led, "SELECT COUNT(*) FROM report_rollup") == 0
        _agrees(led)
        assert _waiting(led) == 0
        assert (
            _count(led, "SELECT SUM(s_n + f_n) FROM report_rollup WHERE scope = 'account' AND grain = 0")
            == 12
        )
        assert led.rollup.fold() == 0  # nothing left: a second fold adds nothing
        _agrees(led)


def test_postgres_notes_each_charge_and_sqlite_marks_it_above_the_watermark(
    ledger_url: str, clock: FakeClock
) -> None:
    with open_ledger(ledger_url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 6)
        postgres = ledger_url.startswith("postgresql")
        assert led.backend.defers_rollup == postgres
        assert _count(led, "SELECT COUNT(*) FROM rollup_pending") == (6 if postgres else 0)
        assert _count(led, "SELECT COUNT(*) FROM charges WHERE rollup_deferred = 1") == (0 if postgres else 6)
        _agrees(led)
        if not postgres:
            mark = "SELECT value FROM report_rollup_meta WHERE name = 'folded_upto'"
            assert _count(led, mark) == _count(led, "SELECT MAX(id) FROM charges")


def test_the_background_fold_folds_the_noted_charges_and_closing_stops_it(
    ledger_url: str, clock: FakeClock
) -> None:
    with open_ledger(ledger_url, clock=clock, fold_interval=0.05) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 3)
        deadline = time.monotonic() + 10
        while _waiting(led) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waiting(led) == 0
        assert _count(led, "SELECT SUM(s_n + f_n) FROM report_rollup WHERE scope = 'account'") == 3 * 2
    led = open_ledger(ledger_url, clock=clock, fold_interval=timedelta(hours=1))  # closed before it folds
    _spend(led, clock, 4)
    started = time.monotonic()
    led.close()
    assert time.monotonic() - started < 1.0  # closing stops the thread; it does not fold
    with open_ledger(ledger_url, clock=clock, fold_interval=None) as after:
        assert _waiting(after) == 4  # the next fold's
        _agrees(after)
        assert _waiting(after) == 0
        assert _count(after, "SELECT SUM(s_n + f_n) FROM report_rollup WHERE scope = 'account'") == 7 * 2


def test_folds_in_many_threads_beside_commits_count_every_charge_once(ledger_url: str) -> None:
    """Four ledgers (their own connections) commit while each folds in the background every
    10 ms and a reader reports in a loop: no charge is lost or added twice."""
    ledgers = [open_ledger(ledger_url, fold_interval=0.01) for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def spend(led: Ledger, n: int) -> None:
        try:
            for i in range(n):
                res = led.reserve("1", ["project:a", f"key:k{i % 3}"], metadata={"model": f"m{i % 2}"})
                led.commit(res, actual="0.5")
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                report(ledgers[0], "project", source="rollup")
        except BaseException as exc:
            errors.append(exc)

    try:
        ledgers[0].set_budget("project:a", 10**6)
        spenders = [threading.Thread(target=spend, args=(led, 40)) for led in ledgers]
        reader = threading.Thread(target=read)
        for thread in [*spenders, reader]:
            thread.start()
        for thread in spenders:
            thread.join(120)
        stop.set()
        reader.join(60)
        assert not errors, errors
        rep = report(ledgers[1], "project", source="rollup")
        assert [(r.key, r.charges, r.actual) for r in rep.rows] == [
            ({"project": "project:a"}, 160, Decimal("80.000"))
        ]
        assert _waiting(ledgers[1]) == 0
        total = "SELECT SUM(s_n), SUM(s_act) FROM report_rollup WHERE scope = 'account' AND grain = 1"
        with ledgers[1].transaction() as cur:
            cur.execute(total)
            assert tuple(int(v) for v in cur.fetchone()) == (160, 80_000)
        _agrees(ledgers[2])
    finally:
        stop.set()
        for led in ledgers:
            led.close()


_HANG_IN_A_FOLD = """
import contextlib, sys, time
from kling_cost.ledger import open_ledger, rollup_fold
led = open_ledger(sys.argv[1], fold_interval=None)
real, batches = led.transaction, []

class Hanging:
    def __init__(self, cur):
        self._cur = cur
    def __getattr__(self, name):
        return getattr(self._cur, name)
    def execute(self, sql, params=()):
        done = self._cur.execute(sql, params)
        if "INSERT INTO report_rollup (" in sql:  # the fold's batch, written, not committed
            batches.append(sql)
            if len(batches) == (2 if int(sys.argv[2]) == 3 else 1):
                print("folding", flush=True)
                time.sleep(120)
        return done

@contextlib.contextmanager
def hanging(**options):
    with real(**options) as cur:
        yield Hanging(cur)

led.transaction = hanging
rollup_fold.fold(led, batch=int(sys.argv[2]))
"""


@pytest.mark.parametrize("batch", [3, 1000], ids=["second-batch", "first-batch"])
def test_a_fold_killed_midway_leaves_its_charges_noted_for_the_next(
    ledger_url: str, clock: FakeClock, batch: int
) -> None:
    """SIGKILL after a fold wrote rollup rows, before it committed: nothing of it lands, and
    the next fold adds every charge exactly once (a batch before it did land: it stays)."""
    with open_ledger(ledger_url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 10)
        child = subprocess.Popen(
            [sys.executable, "-c", _HANG_IN_A_FOLD, ledger_url, str(batch)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "folding"
            if batch == 3:  # the first batch landed; the child hangs in the second
                assert _waiting(led) == 10 - 3
            else:
                assert _waiting(led) == 10
                assert _count(led, "SELECT COUNT(*) FROM report_rollup") == 0
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            assert child.stdout is not None
            child.stdout.close()
        noted = _waiting(led)
        assert noted == (7 if batch == 3 else 10)
        assert led.rollup.fold() == noted
        _agrees(led)
        assert (
            _count(led, "SELECT SUM(s_n + f_n) FROM report_rollup WHERE scope = 'account' AND grain = 0")
            == 10
        )


def test_a_sqlite_copy_of_a_postgres_ledger_folds_what_was_noted(
    pg_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    with open_ledger(pg_url, clock=clock, fold_interval=None) as source:
        source.set_budget("project:a", 1000)
        _spend(source, clock, 4)
        source.rollup.fold()
        _spend(source, clock, 5)  # noted, not folded
        target_url = f"sqlite:///{tmp_path / 'copy.db'}"
        with open_ledger(target_url, clock=clock) as target:
            copy_ledger(source, target)
            assert _count(target, "SELECT COUNT(*) FROM rollup_pending") == 5
            _agrees(target)
            assert _count(target, "SELECT COUNT(*) FROM rollup_pending") == 0
            assert (
                _count(
                    target, "SELECT SUM(s_n + f_n) FROM report_rollup WHERE scope = 'account' AND grain = 1"
                )
                == 9
            )


def test_a_read_only_connection_reports_from_the_charges_when_it_cannot_fold(
    pg_url: str, clock: FakeClock
) -> None:
    with open_ledger(pg_url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 6)
        expected = report(led, "model", tz="UTC", source="charges")
        read_only = pg_url + "&options=-c%20default_transaction_read_only%3Don"
        with open_ledger(read_only, clock=clock, fold_interval=None) as reader:
            auto = report(reader, "model", tz="UTC")
            assert auto.source == "charges" and auto.rows == expected.rows
            with pytest.raises(StorageError, match="read-only"):
                report(reader, "model", tz="UTC", source="rollup")
        assert _count(led, "SELECT COUNT(*) FROM rollup_pending") == 6  # nothing was folded
        assert report(led, "model", tz="UTC").source == "rollup"


@pytest.mark.parametrize(
    "interval", [0, -1, "2", True, float("nan"), float("inf"), 1e10, 0.001, Decimal("NaN"), timedelta(0)]
)
def test_a_bad_fold_interval_is_refused_before_anything_opens(tmp_path: Path, interval: Any) -> None:
    path = tmp_path / "never.db"
    with pytest.raises(
        ConfigurationError, match=r"fold_interval must be (0.01 to 86400 seconds|a number of seconds)"
    ):
        open_ledger(f"sqlite:///{path}", fold_interval=interval)
    assert not path.exists()


def test_an_unknown_status_is_refused_at_the_settle_not_by_a_later_fold(
    pg_url: str, clock: FakeClock
) -> None:
    """The hook checks what the fold would refuse while the settle can still fail cleanly."""
    from kling_cost.ledger.hooks import SettledCharge
    from kling_cost.ledger.rollup import RollupHook

    noted: list[int] = []
    hook = RollupHook(lambda: noted.append(1))
    charge = SettledCharge(
        id=1, status="refunded", created_at_ms=0, settled_at_ms=0, estimate_milli=1, actual_milli=1,
        scopes=("account",), task_id=None, kind=None, model=None, mode=None, duration=None,
        audio=False, metadata={},
    )  # fmt: skip
    with (
        open_ledger(pg_url, clock=clock) as led,
        pytest.raises(StorageError, match="status 'refunded'"),
        led.transaction() as cur,
    ):
        hook.after_settle(cur, clock(), charge, ())
    assert not noted


def test_a_charge_the_fold_cannot_add_stops_folds_but_not_reports(ledger_url: str, clock: FakeClock) -> None:
    """A noted charge in a unit this version does not know (written by hand, or by a newer
    version) cannot be folded: the fold rolls back whole, auto reports read the charges, and
    an explicit rollup report says why."""
    with open_ledger(ledger_url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 3)
        with led.transaction() as cur:
            cur.execute("UPDATE charges SET unit = 'dollars' WHERE id = (SELECT MIN(id) FROM charges)")
        with pytest.raises(StorageError, match="unit 'dollars' is unknown to the report rollup"):
            report(led, "model", tz="UTC", source="rollup")
        assert _waiting(led) == 3  # nothing folded
        assert report(led, "model", tz="UTC").source == "charges"
        with led.transaction() as cur:
            cur.execute("UPDATE charges SET unit = 'units' WHERE unit = 'dollars'")
        assert report(led, "model", tz="UTC").source == "rollup"
        _agrees(led)


@pytest.mark.parametrize("batch", [0, -1, True, 2.5])
def test_a_fold_batch_below_one_is_refused_not_looped_on(tmp_path: Path, batch: Any) -> None:
    from kling_cost.ledger.rollup_fold import fold

    with (
        open_ledger(f"sqlite:///{tmp_path / 'l.db'}") as led,
        pytest.raises(ConfigurationError, match="batch"),
    ):
        fold(led, batch=batch)
