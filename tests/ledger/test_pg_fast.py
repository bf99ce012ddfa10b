"""PostgreSQL's one-round-trip path (ledger/pg_fast.py, the functions of schema_fast.py).

The fast path must be invisible: the same rows as the general path (and as SQLite's) for
the same operations, every unusual case handed to the general path with its rules intact,
and one statement per common operation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kling_cost.errors import BudgetExceeded, ReservationError, StorageError, UnitMismatch
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.backend import Conflict
from kling_cost.ledger.holds import request
from kling_cost.ledger.pg_fast import _RESERVE, FastPath
from kling_cost.ledger.schema_fast import SERVER_MS
from kling_cost.reports import report
from kling_cost.timestamps import to_ms
from tests.helpers import POSTGRES_URL, FakeClock, fresh_postgres_url, need_postgres
from tests.ledger.fast_scenario import SeenHook, scenario, warm

pytestmark = pytest.mark.postgres


@pytest.fixture
def led(pg_url: str, clock: FakeClock) -> Iterator[Ledger]:
    ledger = open_ledger(pg_url, clock=clock)
    yield ledger
    ledger.close()


class Calls:
    """What the ledger sent: one-statement calls (by function) and general transactions."""

    def __init__(self, ledger: Ledger) -> None:
        self.calls: list[str] = []
        self.transactions = 0
        backend: Any = ledger.backend
        call, transaction = backend.call, backend.transaction

        def counted_call(sql: str, params: Any) -> Any:
            self.calls.append(_name(sql))
            return call(sql, params)

        def counted_transaction(**kwargs: Any) -> Any:
            self.transactions += 1
            return transaction(**kwargs)

        backend.call = counted_call
        backend.transaction = counted_transaction

    def reset(self) -> None:
        self.calls.clear()
        self.transactions = 0


def _name(sql: str) -> str:
    for name in ("kling_reserve", "kling_commit", "kling_release", "kling_cache_hit"):
        if name in sql:
            return name
    return "extend" if sql.startswith("UPDATE reservations") else "budgets"


def _fast(ledger: Ledger) -> FastPath:
    fast = ledger._fast
    assert isinstance(fast, FastPath)
    return fast


def test_the_fast_path_writes_what_the_general_path_and_sqlite_write(tmp_path: Path) -> None:
    need_postgres()
    dumps = []
    for kind in ("sqlite", "general", "fast"):
        clock = FakeClock()
        url = f"sqlite:///{tmp_path / 'l.db'}" if kind == "sqlite" else fresh_postgres_url()
        ledger = open_ledger(url, clock=clock)
        try:
            if kind == "general":
                ledger._fast = None
            calls = Calls(ledger) if kind == "fast" else None
            dumps.append(scenario(ledger, clock))
            if calls is not None:  # every kind of operation went the one-statement way
                assert {"kling_reserve", "kling_commit", "kling_release", "kling_cache_hit", "extend"} <= set(
                    calls.calls
                )
        finally:
            if kind != "sqlite":
                ledger.backend.drop_schema()  # type: ignore[attr-defined]
            ledger.close()
    # The last column of a charge is rollup_deferred: 1 on SQLite (a fold finds the charge above
    # its watermark), 0 on PostgreSQL (noted in rollup_pending instead)
    assert {row[-1] for row in dumps[0]["charges"]} == {1}
    assert {row[-1] for row in dumps[1]["charges"]} == {row[-1] for row in dumps[2]["charges"]} == {0}
    for found in dumps:
        found["charges"] = [row[:-1] for row in found["charges"]]
    assert dumps[0] == dumps[1]
    assert dumps[2] == dumps[1]
    assert dumps[2]["charges"] and dumps[2]["rollup"]


def test_a_warm_pair_is_one_statement_each_and_no_general_transaction(led: Ledger) -> None:
    led.set_budget("project:a", limit="100", window="day")
    warm(led, ["project:a"])
    calls = Calls(led)
    res = led.reserve("1.5", ["project:a"])
    led.commit(res)
    assert calls.calls == ["kling_reserve", "kling_commit"]
    assert calls.transactions == 0
    assert led.usage("project:a", "day").used == Decimal("1.5")


# -- what the functions decline, the general path does --------------------------------------


def test_a_crossed_threshold_writes_its_alert(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day", thresholds=["0.5"])
    warm(led, ["project:a"])
    led.reserve("4", ["project:a"])
    assert not led.alerts()
    calls = Calls(led)
    led.reserve("1", ["project:a"])  # 5 of 10: crossed
    assert calls.calls == ["kling_reserve"] and calls.transactions == 1  # declined, then general
    assert [a.threshold for a in led.alerts()] == ["0.5"]


def test_a_refusal_is_the_general_paths_with_its_fields_and_alert(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    led.reserve("8", ["project:a"])
    with pytest.raises(BudgetExceeded) as caught:
        led.reserve("3", ["project:a"])
    assert (caught.value.scope, caught.value.requested, caught.value.available) == (
        "project:a",
        Decimal("3"),
        Decimal("2"),
    )
    assert any(a.kind == "refused" for a in led.alerts())
    assert led.usage("project:a", "day").reserved == Decimal("8")


def test_an_overage_commit_records_it(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day", thresholds=["1"])
    warm(led, ["project:a"])
    res = led.reserve("9", ["project:a"])
    led.commit(res, actual="12")
    (charge,) = led.charges()
    assert charge.overage == Decimal("2")
    assert {a.kind for a in led.alerts()} >= {"overage"}


def test_a_lapsed_lease_is_refused_or_forced_as_before(led: Ledger, clock: FakeClock) -> None:
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    res = led.reserve("2", ["project:a"], ttl=timedelta(seconds=5))
    clock.advance(seconds=6)
    with pytest.raises(ReservationError, match="expired"):
        led.commit(res)
    assert led.commit(res, force=True).status == "committed"
    assert led.usage("project:a", "day").used == Decimal("2")


@pytest.mark.parametrize("change", ["lower limit", "unit switch", "delete", "new budget"])
def test_a_budget_changed_by_another_process_is_read_again(
    pg_url: str, clock: FakeClock, change: str
) -> None:
    mine, other = open_ledger(pg_url, clock=clock), open_ledger(pg_url, clock=clock)
    try:
        mine.set_budget("project:a", limit="10", window="day")
        warm(mine, ["project:a"])
        if change != "unit switch":
            mine.commit(mine.reserve("5", ["project:a"]))
        if change == "lower limit":
            other.set_budget("project:a", limit="6", window="day")
            with pytest.raises(BudgetExceeded):
                mine.reserve("2", ["project:a"])
        elif change == "unit switch":
            other.set_budget("project:a", limit="10", window="day", unit="credits")
            with pytest.raises(UnitMismatch):
                mine.reserve("2", ["project:a"])
        elif change == "delete":
            other.delete_budget("project:a", "day")
            res = mine.reserve("20", ["project:a"])
            assert res.windows == ()
        else:
            other.set_budget("project:a", limit="3", window="week")
            with pytest.raises(BudgetExceeded) as caught:
                mine.reserve("4", ["project:a"])
            assert caught.value.window == "week"
    finally:
        mine.close()
        other.close()


def test_metadata_changed_by_another_process_reaches_the_charge(pg_url: str, clock: FakeClock) -> None:
    mine, other = open_ledger(pg_url, clock=clock), open_ledger(pg_url, clock=clock)
    try:
        warm(mine, ["project:a"])
        res = mine.reserve("2", ["project:a"], metadata={"mode": "std"})
        other.attach_task(res, "t-1", {"model": "kling-v2-master"})
        mine.commit(res)
        (charge,) = mine.charges()
        assert (charge.model, charge.mode, charge.task_id) == ("kling-v2-master", "std", "t-1")
    finally:
        mine.close()
        other.close()


def test_a_new_window_is_used_at_once(led: Ledger, clock: FakeClock) -> None:
    clock.set(datetime(2026, 6, 15, 23, 59, 59, tzinfo=UTC))
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    assert led.reserve("1", ["project:a"]).windows == ((1, "2026-06-15"),)
    clock.advance(seconds=2)
    assert led.reserve("1", ["project:a"]).windows == ((1, "2026-06-16"),)
    calls = Calls(led)
    assert led.reserve("1", ["project:a"]).windows == ((1, "2026-06-16"),)
    assert calls.calls == ["kling_reserve"]


def test_a_hook_of_yours_or_an_open_transaction_takes_the_general_path(led: Ledger) -> None:
    seen: list[str] = []
    warm(led, ["project:a"])
    led.hooks.append(SeenHook(seen))
    led.commit(led.reserve("1", ["project:a"]))
    assert seen == ["reserve", "settle"]
    with led.transaction(), pytest.raises(StorageError, match="do not nest"):
        led.reserve("1", ["project:a"])


# -- safe to send again ---------------------------------------------------------------------


def test_a_reservation_sent_twice_holds_once(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    fast = _fast(led)
    req = request("2", ["project:a"], None, None, "units", None, None)
    clock_ms = to_ms(led.clock())
    budgets = fast._load(req.scopes)
    params = fast._reserve_params(req, budgets, "0123abc", 60_000, led.clock(), clock_ms)
    assert params is not None
    first = led.backend.call(_RESERVE, params)  # type: ignore[attr-defined]
    again = led.backend.call(_RESERVE, params)  # type: ignore[attr-defined]
    assert first[0][0] == again[0][0]
    assert led.usage("project:a", "day").reserved == Decimal("2")


def test_connections_the_server_dropped_are_replaced(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    pids = set()
    for _ in range(3):
        with led.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pids.add(int(cur.fetchone()[0]))
    with psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    calls = Calls(led)
    res = led.reserve("1", ["project:a"])
    assert led.commit(res).status == "committed"
    assert calls.calls == ["kling_reserve", "kling_commit"]
    assert led.usage("project:a", "day").used == Decimal("1")


def test_a_lost_race_in_a_function_falls_back_to_the_general_path(led: Ledger) -> None:
    """A deadlock or serialization failure inside a function (a real server produces them
    only by chance) is a Conflict: the general path runs, and retries as it always did."""
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    backend: Any = led.backend
    real = backend.call
    lost: list[str] = []

    def losing(sql: str, params: Any) -> Any:
        if "kling_" in sql or sql.startswith("UPDATE"):
            lost.append(_name(sql))
            raise Conflict("deadlock detected")
        return real(sql, params)

    backend.call = losing
    res = led.reserve("2", ["project:a"])
    res = led.extend(res, timedelta(hours=1))
    assert led.commit(res).status == "committed"
    assert led.record_cache_hit("1", ["project:a"])
    assert lost == ["kling_reserve", "extend", "kling_commit", "kling_cache_hit"]
    assert led.usage("project:a", "day").used == Decimal("2")


def test_the_servers_milliseconds_are_rounded_down_exactly() -> None:
    need_postgres()
    with psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True) as conn:
        for stamp in (
            "2026-06-15 23:59:59.999999+00",
            "2026-06-15 00:00:00.000999+00",
            "1999-12-31 12:00:00.5+00",
        ):
            row = conn.execute(
                f"SELECT {SERVER_MS.replace('now()', '%(t)s::timestamptz')}", {"t": stamp}
            ).fetchone()
            assert row is not None
            assert row[0] == to_ms(datetime.fromisoformat(stamp.replace("+00", "+00:00")))


@pytest.mark.parametrize("operation", ["reserve", "commit", "release"])
def test_a_backend_killed_inside_a_function_changes_nothing_twice(led: Ledger, operation: str) -> None:
    """The server kills the connection while the function waits for a row lock: nothing of
    that statement stays, the ledger sends it again on a new connection, it happens once."""
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    held = led.reserve("2", ["project:a"])
    schema = led.backend.schema  # type: ignore[attr-defined]
    calls = Calls(led)
    outcome: list[Any] = []
    with psycopg.connect(POSTGRES_URL.split("?")[0]) as blocker:  # a transaction holding the lock
        blocker.execute(f'SET search_path TO "{schema}"')
        if operation == "reserve":
            blocker.execute("SELECT 1 FROM budget_windows FOR UPDATE")
        else:
            blocker.execute("SELECT 1 FROM reservations WHERE id = %s FOR UPDATE", (held.id,))
        mine = blocker.execute("SELECT pg_backend_pid()").fetchone()
        assert mine is not None

        def run() -> None:
            if operation == "reserve":
                outcome.append(led.reserve("3", ["project:a"]))
            elif operation == "commit":
                outcome.append(led.commit(held))
            else:
                outcome.append(led.release(held))

        worker = threading.Thread(target=run)
        worker.start()
        with psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True) as admin:
            victim = None
            for _ in range(200):
                row = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (mine[0],)
                ).fetchone()
                if row is not None:
                    victim = row[0]
                    break
                time.sleep(0.02)
            assert victim is not None, "the call never waited for the lock"
            admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
            time.sleep(0.1)
        blocker.rollback()
        worker.join(10)
    assert outcome and calls.calls == [f"kling_{operation}"]  # sent again inside the one call
    usage = led.usage("project:a", "day")
    expected = {"reserve": (0, 5), "commit": (2, 0), "release": (0, 0)}[operation]
    assert (usage.used, usage.reserved) == tuple(Decimal(v) for v in expected)
    assert len(led.charges()) == (1 if operation == "commit" else 0)


def test_charges_of_many_connections_wait_for_a_fold_then_sum_to_the_charges(
    pg_url: str, clock: FakeClock
) -> None:
    """A commit adds no rollup row (no queue on one shared row): it notes its charge, and the
    first report folds every noted charge in once; the rollup's answer is the charges'."""
    ledgers = [open_ledger(pg_url, clock=clock, fold_interval=None) for _ in range(4)]
    try:
        ledgers[0].set_budget("project:a", limit="1000", window="day")
        for i, ledger in enumerate(ledgers):
            warm(ledger, ["project:a"])
            for j in range(3):
                res = ledger.reserve("2", ["project:a"], metadata={"model": f"m{j % 2}"})
                ledger.commit(res, actual=f"1.{i}{j}")
                clock.advance(minutes=20)
        with ledgers[0].transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM report_rollup")
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT COUNT(*) FROM rollup_pending p JOIN charges c ON c.id = p.charge_id")
            noted = cur.fetchone()[0]
            cur.execute("SELECT COUNT(*) FROM charges")
            assert noted == cur.fetchone()[0] >= 12
        for group in ("day,model", "model", "project"):
            fast = report(ledgers[1], group, tz="UTC", source="rollup")
            assert fast.rows == report(ledgers[1], group, tz="UTC", source="charges").rows
        with ledgers[0].transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM rollup_pending")
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT SUM(s_n) FROM report_rollup WHERE scope = 'account' AND grain = 0")
            assert cur.fetchone()[0] == noted
    finally:
        for ledger in ledgers:
            ledger.close()


def test_the_first_statements_after_opening_repeat_without_error(led: Ledger) -> None:
    """Opening runs DDL (migrations), after which psycopg owes its connection a DEALLOCATE
    ALL that it sends behind the next statement it prepares (then believes that one still
    prepared): a one-statement call sent again right away still works."""
    backend: Any = led.backend
    for _ in range(3):
        assert backend.call("SELECT %s::text, now()", ("same statement",))[0][0] == "same statement"
    with pytest.raises(ReservationError, match="does not exist"):
        led.extend("no-such-reservation", timedelta(hours=1))
