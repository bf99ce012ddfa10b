"""SQLite's deferred report rollup (ledger/rollup_mark.py): settles mark their charges, a fold
adds every charge above the watermark once, whatever versions share the file, whatever rows
are deleted by hand, and a report never waits on a long write elsewhere.

(What both backends share, a fold killed midway, folds in many threads, a charge a fold cannot
add, the background fold, is in test_rollup_fold.py; copies in test_copy_batches.py.)"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path

import pytest

from kling_cost.errors import StorageError
from kling_cost.ledger import Ledger, copy_ledger, open_ledger
from kling_cost.reports import report
from tests.helpers import FakeClock

GROUPS = ("day,model", "model", "project", "status")


def _count(led: Ledger, sql: str) -> int:
    with led.transaction(snapshot=True) as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return 0 if row is None else int(row[0] or 0)


def _rolled(led: Ledger) -> tuple[int, int]:
    """Charges and thousandths actually charged in the rollup (account, hour rows), as stored."""
    with led.transaction(snapshot=True) as cur:
        cur.execute(
            "SELECT SUM(s_n + f_n + c_n), SUM(s_act + f_act + c_act) FROM report_rollup "
            "WHERE scope = 'account' AND grain = 0"
        )
        n, act = cur.fetchone()
        return int(n or 0), int(act or 0)


def _mark(led: Ledger) -> int:
    return _count(led, "SELECT value FROM report_rollup_meta WHERE name = 'folded_upto'")


def _agrees(led: Ledger) -> None:
    for group in GROUPS:
        fast = report(led, group, tz="UTC", source="rollup")
        slow = report(led, group, tz="UTC", source="charges")
        assert fast.rows == slow.rows and fast.totals == slow.totals, group


def _spend(led: Ledger, clock: FakeClock, n: int, actual: str = "1.5") -> None:
    for i in range(n):
        res = led.reserve("2", ["project:a"], metadata={"model": f"m{i % 2}"})
        if i % 4 == 3:
            led.release(led.attach_task(res, f"t-{clock().timestamp()}-{i}"))
        else:
            led.commit(res, actual=actual)
        clock.advance(minutes=41)


def _as_before_migration_15(led: Ledger) -> None:
    """Make ``led`` settle as kling-cost did before migration 15 (and as a process running an
    older version still does): each charge added to the rollup by its own settle, unmarked."""
    led._fast = None
    led._settle.rollup_deferred = 0
    led.rollup.writer.deferred = False
    led.rollup.writer.noted = None


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_the_lean_and_the_general_path_both_leave_their_charges_to_the_fold(
    url: str, clock: FakeClock
) -> None:
    with open_ledger(url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 8)  # the lean path
        general = led._fast
        led._fast = None
        _spend(led, clock, 8)
        led._fast = general
        assert _count(led, "SELECT COUNT(*) FROM charges WHERE rollup_deferred = 1") == 16
        assert _rolled(led) == (0, 0) and _mark(led) == 0
        assert led.rollup.fold() == 16
        assert _mark(led) == 16 and _rolled(led) == (16, 12 * 1500)
        assert led.rollup.fold() == 0
        _agrees(led)


def test_charges_an_older_version_added_itself_are_not_added_again(url: str, clock: FakeClock) -> None:
    """Two processes on one file, one of them still running the version before migration 15
    (it adds each charge to the rollup itself), settles interleaved with folds: each charge
    is in the rollup once."""
    with (
        open_ledger(url, clock=clock, fold_interval=None) as new,
        open_ledger(url, clock=clock, fold_interval=None) as old,
    ):
        _as_before_migration_15(old)
        new.set_budget("project:a", 1000)
        for round_ in range(3):
            _spend(new, clock, 5)
            _spend(old, clock, 6)
            _spend(new, clock, 2)
            if round_ == 1:
                new.rollup.fold()
        assert _count(new, "SELECT COUNT(*) FROM charges WHERE rollup_deferred = 0") == 18
        _agrees(new)
        assert _rolled(new)[0] == 39
        assert _mark(new) == 39


def test_a_ledger_migrated_to_15_keeps_what_its_rollup_had(url: str, clock: FakeClock) -> None:
    """Charges settled before migration 15 were in the rollup already: the watermark starts
    past them, and only the charges settled afterwards are folded."""
    with open_ledger(url, clock=clock, fold_interval=None) as led:
        _as_before_migration_15(led)
        led.set_budget("project:a", 1000)
        _spend(led, clock, 7)
        assert _rolled(led)[0] == 7
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("DROP TRIGGER charges_deleted")
    conn.execute("ALTER TABLE charges DROP COLUMN rollup_deferred")  # the table at schema 14
    conn.execute("DELETE FROM report_rollup_meta WHERE name = 'folded_upto'")
    conn.execute("DELETE FROM schema_version WHERE version = 15")
    conn.close()
    with open_ledger(url, clock=clock, fold_interval=None) as led:
        assert _mark(led) == 7
        _spend(led, clock, 4)
        _agrees(led)
        assert _rolled(led)[0] == 11


def test_deleting_the_last_charges_by_hand_brings_the_watermark_down(url: str, clock: FakeClock) -> None:
    """SQLite hands the ids of the last rows out again: charges settled after the last ones
    were deleted are still folded (what was folded stays in the rollup, as ever)."""
    with open_ledger(url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 6)
        led.rollup.fold()
        assert _mark(led) == 6
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("DELETE FROM charges WHERE id >= 5")
        conn.execute("DELETE FROM charges WHERE id = 2")  # not the last: nothing moves
        conn.close()
        assert _mark(led) == 4
        _spend(led, clock, 3)  # ids 5, 6 and 7
        assert _count(led, "SELECT MAX(id) FROM charges") == 7
        led.rollup.fold()
        assert _rolled(led)[0] == 6 + 3 and _mark(led) == 7


def test_a_fold_that_cannot_add_a_charge_changes_nothing(url: str, clock: FakeClock) -> None:
    with open_ledger(url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 5)
        led.rollup.fold()
        _spend(led, clock, 5)
        before = _rolled(led)
        with led.transaction() as cur:
            cur.execute("UPDATE charges SET unit = 'dollars' WHERE id = 8")
        with pytest.raises(StorageError, match="unit 'dollars' is unknown"):
            led.rollup.fold()
        assert _rolled(led) == before and _mark(led) == 5
        assert report(led, "model").source == "charges"  # auto reports read the charges meanwhile
        with led.transaction() as cur:
            cur.execute("UPDATE charges SET unit = 'units' WHERE id = 8")
        assert led.rollup.fold() == 5
        _agrees(led)


def test_a_report_never_waits_for_a_long_write_elsewhere(tmp_path: Path, clock: FakeClock) -> None:
    """Another process holds SQLite's write lock: an automatic report reads the charges at
    once (exact), an explicit rollup report fails after the ledger's timeout and says why."""
    path = tmp_path / "ledger.db"
    with open_ledger(f"sqlite:///{path}", clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        _spend(led, clock, 9)
        led.rollup.fold()
        _spend(led, clock, 3)  # waiting for a fold
        expected = report(led, "day,model", tz="UTC", source="charges")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with open_ledger(f"sqlite:///{path}?timeout=0.5", clock=clock, fold_interval=None) as led:
            started = time.monotonic()
            auto = report(led, "day,model", tz="UTC")
            assert time.monotonic() - started < 0.3
            assert auto.source == "charges" and auto.rows == expected.rows
            with pytest.raises(StorageError, match=r"no write lock within 0\.5 s|database is locked"):
                report(led, "day,model", tz="UTC", source="rollup")
    finally:
        other.execute("ROLLBACK")
        other.close()
    with open_ledger(f"sqlite:///{path}", clock=clock, fold_interval=None) as led:
        auto = report(led, "day,model", tz="UTC")
        assert auto.source == "rollup" and auto.rows == expected.rows
        assert _rolled(led) == (12, 10 * 1500)


def test_an_unknown_status_is_refused_at_the_settle_not_by_a_later_fold(url: str, clock: FakeClock) -> None:
    """The hook checks what the fold would refuse while the settle can still fail cleanly."""
    from kling_cost.ledger.hooks import SettledCharge
    from kling_cost.ledger.rollup import RollupHook

    noted: list[int] = []
    hook = RollupHook(lambda: noted.append(1))
    hook.deferred = True
    charge = SettledCharge(
        id=1, status="refunded", created_at_ms=0, settled_at_ms=0, estimate_milli=1, actual_milli=1,
        scopes=("account",), task_id=None, kind=None, model=None, mode=None, duration=None,
        audio=False, metadata={},
    )  # fmt: skip
    with open_ledger(url, clock=clock) as led:
        with pytest.raises(StorageError, match="status 'refunded'"), led.transaction() as cur:
            hook.after_settle(cur, clock(), charge, ())
        assert not noted
        with led.transaction() as cur:
            hook.after_settle(cur, clock(), dataclasses.replace(charge, status="failed"), ())
        assert noted == [1]  # the background fold is asked to run; nothing written here
        assert _count(led, "SELECT COUNT(*) FROM report_rollup") == 0


def test_a_copy_with_charges_waiting_then_its_last_charges_deleted_counts_new_ones_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The copy noted the waiting charges in rollup_pending; deleting the last of them by hand
    drops their notes with them, so the new charges that get their ids are folded once."""
    with (
        open_ledger(f"sqlite:///{tmp_path / 'a.db'}", clock=clock, fold_interval=None) as a,
        open_ledger(f"sqlite:///{tmp_path / 'b.db'}", clock=clock, fold_interval=None) as b,
    ):
        a.set_budget("project:a", 1000)
        for _ in range(4):
            a.commit(a.reserve("2", ["project:a"]), actual="1")
        a.rollup.fold()
        for _ in range(3):
            a.commit(a.reserve("2", ["project:a"]), actual="1")
        copy_ledger(a, b)
        assert _count(b, "SELECT COUNT(*) FROM rollup_pending") == 3 and _mark(b) == 7
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    conn.execute("DELETE FROM charges WHERE id >= 6")
    conn.close()
    with open_ledger(f"sqlite:///{tmp_path / 'b.db'}", clock=clock, fold_interval=None) as b:
        assert _count(b, "SELECT COUNT(*) FROM rollup_pending") == 1 and _mark(b) == 5
        for _ in range(2):
            b.commit(b.reserve("2", ["project:a"]), actual="1")  # ids 6 and 7 again
        b.rollup.fold()
        assert _rolled(b) == (7, 7000)
        _agrees(b)
