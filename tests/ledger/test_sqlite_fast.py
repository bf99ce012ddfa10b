"""SQLite's lean path (ledger/sqlite_fast.py): the common reserve and commit in one plain
write transaction each, with less Python.

It must be invisible: the same rows as the general path for the same operations, and every
unusual case (a refusal, a crossing, an overage, a budget or reservation changed by another
process) handed to the general path with its rules intact.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.errors import BudgetExceeded, ReservationError, StorageError, UnitMismatch
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.sqlite_fast import SQLiteFastPath
from tests.helpers import FakeClock
from tests.ledger.fast_scenario import SeenHook, dump, scenario, warm


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def led(url: str, clock: FakeClock) -> Iterator[Ledger]:
    ledger = open_ledger(url, clock=clock)
    yield ledger
    ledger.close()


@pytest.fixture
def two(url: str, clock: FakeClock) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one file, as two processes have them (one clock)."""
    mine, other = open_ledger(url, clock=clock), open_ledger(url, clock=clock)
    yield mine, other
    mine.close()
    other.close()


class Paths:
    """Which path each reserve and commit took: ``lean`` (the lean transaction did it) or
    ``general`` (a transaction of the ledger's own)."""

    def __init__(self, ledger: Ledger) -> None:
        self.taken: list[str] = []
        fast = ledger._fast
        assert isinstance(fast, SQLiteFastPath)
        reserve, commit, transaction = fast.reserve, fast.commit, ledger.transaction

        def lean_reserve(*args: Any) -> Any:
            done = reserve(*args)
            self.taken.append("lean reserve" if done is not None else "declined")
            return done

        def lean_commit(*args: Any) -> Any:
            done = commit(*args)
            self.taken.append("lean commit" if done is not None else "declined")
            return done

        def general(**kwargs: Any) -> Any:
            self.taken.append("general")
            return transaction(**kwargs)

        fast.reserve = lean_reserve  # type: ignore[method-assign]
        fast.commit = lean_commit  # type: ignore[method-assign]
        ledger.transaction = general  # type: ignore[method-assign]


def test_the_lean_path_writes_what_the_general_path_writes(tmp_path: Path) -> None:
    dumps = []
    for kind in ("general", "lean"):
        clock = FakeClock()
        ledger = open_ledger(f"sqlite:///{tmp_path / kind}.db", clock=clock)
        try:
            if kind == "general":
                ledger._fast = None
            paths = Paths(ledger) if kind == "lean" else None
            dumps.append(scenario(ledger, clock))
            if paths is not None:
                assert {"lean reserve", "lean commit"} <= set(paths.taken)
        finally:
            ledger.close()
    assert dumps[1] == dumps[0]
    assert dumps[1]["charges"] and dumps[1]["rollup"]


def test_a_warm_pair_takes_no_general_transaction(led: Ledger) -> None:
    led.set_budget("project:a", limit="100", window="day")
    warm(led, ["project:a"])
    paths = Paths(led)
    res = led.reserve("1.5", ["project:a"], metadata={"model": "kling-v2-1", "mode": "pro"})
    assert (res.fresh, res.revived, res.status) == (True, False, "reserved")
    done = led.commit(res, actual="1.25", task_id="t-1")
    assert paths.taken == ["lean reserve", "lean commit"]
    assert (done.status, done.actual, done.task_id, done.fresh) == (
        "committed",
        Decimal("1.25"),
        "t-1",
        False,
    )
    assert done.metadata == {"model": "kling-v2-1", "mode": "pro"}
    usage = led.usage("project:a", "day")
    assert (usage.used, usage.reserved) == (Decimal("1.25"), Decimal("0"))
    (charge,) = led.charges()
    assert (charge.model, charge.mode, charge.actual, charge.estimate) == (
        "kling-v2-1",
        "pro",
        Decimal("1.25"),
        Decimal("1.5"),
    )


def test_the_metadata_a_caller_changes_after_reserving_never_reaches_the_charge(led: Ledger) -> None:
    warm(led, ["project:a"])
    res = led.reserve("1", ["project:a"], metadata={"model": "kling-v2-1"})
    res.metadata["model"] = "something else"  # the caller's dict, not the ledger's
    done = led.commit(res)
    (charge,) = led.charges()
    assert charge.model == "kling-v2-1"
    assert done.metadata == {"model": "kling-v2-1"}


# -- what the lean path declines, the general path does --------------------------------------


def test_a_crossed_threshold_writes_its_alert(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day", thresholds=["0.5"])
    warm(led, ["project:a"])
    led.reserve("4", ["project:a"])
    assert not led.alerts()
    paths = Paths(led)
    led.reserve("1", ["project:a"])  # 5 of 10: crossed
    assert paths.taken == ["declined", "general"]
    assert [a.threshold for a in led.alerts()] == ["0.5"]
    assert led.usage("project:a", "day").reserved == Decimal("5")  # held once


def test_a_refusal_is_the_general_paths_with_its_fields_and_alert(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day", max_per_request="5")
    warm(led, ["project:a"])
    led.reserve("5", ["project:a"])
    led.reserve("3", ["project:a"])
    with pytest.raises(BudgetExceeded) as caught:
        led.reserve("3", ["project:a"])
    assert (caught.value.scope, caught.value.requested, caught.value.available, caught.value.reason) == (
        "project:a",
        Decimal("3"),
        Decimal("2"),
        "limit",
    )
    with pytest.raises(BudgetExceeded) as caught:
        led.reserve("6", ["project:a"])
    assert caught.value.reason == "max_per_request"
    assert any(a.kind == "refused" for a in led.alerts())
    assert led.usage("project:a", "day").reserved == Decimal("8")


def test_an_overage_commit_records_it(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day", thresholds=["1"])
    warm(led, ["project:a"])
    res = led.reserve("9", ["project:a"])
    paths = Paths(led)
    led.commit(res, actual="12")
    assert paths.taken == ["declined", "general"]
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
    assert led.commit(res).status == "committed"  # twice: a no-op


def test_a_sweep_due_is_the_general_paths(led: Ledger, clock: FakeClock) -> None:
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    led.reserve("8", ["project:a"], ttl=timedelta(seconds=5))
    clock.advance(seconds=6)  # the lease lapsed and a sweep is due
    paths = Paths(led)
    led.reserve("9", ["project:a"])
    assert paths.taken == ["declined", "general"]
    assert led.usage("project:a", "day").reserved == Decimal("9")


@pytest.mark.parametrize("change", ["lower limit", "unit switch", "delete", "new budget", "new scope budget"])
def test_a_budget_changed_by_another_process_counts_at_once(two: tuple[Ledger, Ledger], change: str) -> None:
    mine, other = two
    mine.set_budget("project:a", limit="10", window="day")
    warm(mine, ["project:a", "key:k"])
    if change != "unit switch":
        mine.commit(mine.reserve("5", ["project:a", "key:k"]))
    if change == "lower limit":
        other.set_budget("project:a", limit="6", window="day")
        with pytest.raises(BudgetExceeded):
            mine.reserve("2", ["project:a", "key:k"])
    elif change == "unit switch":
        other.set_budget("project:a", limit="10", window="day", unit="credits")
        with pytest.raises(UnitMismatch):
            mine.reserve("2", ["project:a", "key:k"])
    elif change == "delete":
        other.delete_budget("project:a", "day")
        res = mine.reserve("20", ["project:a", "key:k"])
        assert res.windows == ()
    elif change == "new budget":
        other.set_budget("project:a", limit="3", window="week")
        with pytest.raises(BudgetExceeded) as caught:
            mine.reserve("4", ["project:a", "key:k"])
        assert caught.value.window == "week"
    else:
        other.set_budget("key:k", limit="1", window="month")
        with pytest.raises(BudgetExceeded) as caught:
            mine.reserve("2", ["project:a", "key:k"])
        assert caught.value.scope == "key:k"


def test_metadata_and_a_task_set_by_another_process_reach_the_charge(two: tuple[Ledger, Ledger]) -> None:
    mine, other = two
    warm(mine, ["project:a"])
    res = mine.reserve("2", ["project:a"], metadata={"mode": "std"})
    other.attach_task(res, "t-1", {"model": "kling-v2-master"})
    done = mine.commit(res)
    (charge,) = mine.charges()
    assert (charge.model, charge.mode, charge.task_id) == ("kling-v2-master", "std", "t-1")
    assert done.metadata == {"mode": "std", "model": "kling-v2-master"}


def test_a_task_and_a_longer_lease_from_another_process_stay_on_the_lean_path(
    two: tuple[Ledger, Ledger], clock: FakeClock
) -> None:
    mine, other = two
    warm(mine, ["project:a"])
    res = mine.reserve("2", ["project:a"], ttl=timedelta(seconds=30))
    other.attach_task(res, "t-7")
    longer = other.extend(res, timedelta(hours=1))
    clock.advance(minutes=5)  # past the first lease, within the extended one
    paths = Paths(mine)
    done = mine.commit(res)
    assert paths.taken == ["lean commit"]
    assert (done.task_id, done.expires_at) == ("t-7", longer.expires_at)
    assert mine.charges()[0].task_id == "t-7"


def test_a_reservation_revived_elsewhere_settles_what_it_holds_now(two: tuple[Ledger, Ledger]) -> None:
    mine, other = two
    mine.set_budget("project:a", limit="100", window="day")
    mine.set_budget("project:b", limit="100", window="day")
    warm(mine, ["project:a"])
    first = mine.reserve("2", ["project:a"], idempotency_key="job-1", metadata={"mode": "std"})
    other.release(first)  # never sent: the key may be reserved again, with another request
    again = other.reserve("7", ["project:b"], idempotency_key="job-1", metadata={"mode": "pro"})
    assert again.id == first.id and again.revived
    paths = Paths(mine)
    done = mine.commit(first)  # this process remembers the first request, not this one
    assert paths.taken == ["declined", "general"]
    assert (done.amount, done.scopes) == (Decimal("7"), ("account", "project:b"))
    (charge,) = mine.charges()
    assert (charge.estimate, charge.mode, charge.scopes) == (
        Decimal("7"),
        "pro",
        ("account", "project:b"),
    )
    assert mine.usage("project:a", "day").reserved == Decimal("0")
    assert mine.usage("project:b", "day").used == Decimal("7")


def test_a_reservation_settled_elsewhere_is_not_settled_twice(two: tuple[Ledger, Ledger]) -> None:
    mine, other = two
    mine.set_budget("project:a", limit="100", window="day")
    warm(mine, ["project:a"])
    res = mine.reserve("2", ["project:a"])
    other.commit(res, actual="1")
    assert mine.commit(res, actual="2").actual == Decimal("1")  # the first settlement stands
    with pytest.raises(ReservationError):
        mine.release(res)
    assert len(mine.charges()) == 1
    assert mine.usage("project:a", "day").used == Decimal("1")


def test_a_hook_of_yours_or_an_open_transaction_takes_the_general_path(led: Ledger) -> None:
    seen: list[str] = []
    warm(led, ["project:a"])
    led.hooks.append(SeenHook(seen))
    led.commit(led.reserve("1", ["project:a"]))
    assert seen == ["reserve", "settle"]
    led.hooks.pop()
    res = led.reserve("1", ["project:a"])
    with led.transaction(), pytest.raises(StorageError, match="do not nest"):
        led.reserve("1", ["project:a"])
    with led.transaction(), pytest.raises(StorageError, match="do not nest"):
        led.commit(res)
    assert led.commit(res).status == "committed"


def test_an_idempotent_repeat_holds_once_and_settles_once(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day")
    warm(led, ["project:a"])
    first = led.reserve("2", ["project:a"], idempotency_key="k-1")
    again = led.reserve("2", ["project:a"], idempotency_key="k-1")
    assert again.id == first.id and not again.fresh
    led.commit(first)
    led.commit(again)
    assert led.usage("project:a", "day").used == Decimal("2")
    assert len(led.charges()) == 1


def test_threads_on_one_budget_never_overspend_and_every_pair_is_recorded(led: Ledger) -> None:
    led.set_budget("project:a", limit="50", window="day")
    warm(led, ["project:a"])
    refused: list[int] = []

    def worker() -> None:
        for _ in range(40):
            try:
                res = led.reserve("1", ["project:a"])
            except BudgetExceeded:
                refused.append(1)
                continue
            led.commit(res, actual="0.5")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = led.usage("project:a", "day")
    assert usage.used + usage.reserved <= Decimal("50")
    assert (usage.used, usage.reserved) == (Decimal("0.5") * (160 - len(refused)), Decimal("0"))
    assert len(led.charges(limit=1000)) == 160 - len(refused)
    assert led.rollup.fold() == 160 - len(refused)  # every charge waited for the fold, each once
    with led.transaction() as cur:
        cur.execute("SELECT SUM(s_n), SUM(s_act) FROM report_rollup WHERE scope = 'project:a' AND grain = 0")
        n, act = cur.fetchone()
    assert (n, act) == (160 - len(refused), 500 * (160 - len(refused)))


def test_a_closed_ledger_refuses_the_lean_path_too(url: str) -> None:
    ledger = open_ledger(url)
    warm(ledger, ["project:a"])
    res = ledger.reserve("1", ["project:a"])
    ledger.close()
    with pytest.raises(StorageError, match="closed"):
        ledger.reserve("1", ["project:a"])
    with pytest.raises(StorageError, match="closed"):
        ledger.commit(res)


def test_the_windows_column_is_what_the_general_path_writes(led: Ledger) -> None:
    led.set_budget("project:a", limit="10", window="day")
    led.set_budget("account", limit="100", window="month")
    warm(led, ["project:a"])
    res = led.reserve("1", ["project:a"])
    with led.transaction() as cur:
        cur.execute("SELECT windows FROM reservations WHERE id = ?", (res.id,))
        (text,) = cur.fetchone()
    assert [tuple(w) for w in json.loads(text)] == [tuple(w) for w in res.windows]
    assert len(res.windows) == 2


# -- the budgets' change counter (migration 14) --------------------------------------------------


def test_a_budget_changed_outside_any_ledger_counts_at_once(url: str, clock: FakeClock) -> None:
    """The counter is kept by triggers: a change by the sqlite3 shell, or by a process of an
    earlier version, moves it too, and the lean path reads the budgets again."""
    led = open_ledger(url, clock=clock)
    try:
        led.set_budget("project:a", limit="10", window="day")
        warm(led, ["project:a"])
        led.commit(led.reserve("5", ["project:a"]))
        with sqlite3.connect(url.removeprefix("sqlite:///")) as shell:
            shell.execute("UPDATE budgets SET limit_milli = 6000 WHERE scope = 'project:a'")
        paths = Paths(led)
        with pytest.raises(BudgetExceeded) as caught:
            led.reserve("2", ["project:a"])
        assert caught.value.limit == Decimal("6")
        assert paths.taken[0] == "declined"
        with sqlite3.connect(url.removeprefix("sqlite:///")) as shell:
            shell.execute("DELETE FROM budgets WHERE scope = 'project:a'")
        assert led.reserve("20", ["project:a"]).windows == ()
    finally:
        led.close()


def test_after_a_change_the_budgets_are_read_once_and_the_lean_path_resumes(
    two: tuple[Ledger, Ledger],
) -> None:
    mine, other = two
    mine.set_budget("project:a", limit="100", window="day")
    warm(mine, ["project:a"])
    other.set_budget("project:a", limit="50", window="day")
    paths = Paths(mine)
    for _ in range(3):
        mine.reserve("1", ["project:a"])
    assert paths.taken == ["declined", "general", "lean reserve", "lean reserve"]
    assert mine.usage("project:a", "day").reserved == Decimal("3")


def test_every_change_to_the_budgets_table_moves_the_counter(led: Ledger) -> None:
    def epoch() -> int:
        with led.transaction() as cur:
            cur.execute("SELECT epoch FROM budget_epoch")
            return int(cur.fetchone()[0])

    start = epoch()
    led.set_budget("project:a", limit="10", window="day")
    after_insert = epoch()
    led.set_budget("project:a", limit="20", window="day")
    after_update = epoch()
    led.delete_budget("project:a", "day")
    assert start < after_insert < after_update < epoch()


def test_a_reservation_handed_out_is_what_its_constructor_makes(led: Ledger) -> None:
    """to_reservation fills the frozen dataclass's fields directly: every field, nothing else."""
    from dataclasses import fields, replace

    warm(led, ["project:a"])
    for res in (
        led.reserve("1.5", ["project:a"], idempotency_key="k", metadata={"mode": "pro"}, catalog="c"),
        led.commit(led.reserve("2", ["project:a"]), actual="1", task_id="t"),
    ):
        assert set(vars(res)) == {f.name for f in fields(res)}
        assert replace(res) == res
        with pytest.raises(AttributeError):
            res.status = "x"  # type: ignore[misc]


@pytest.mark.parametrize("change", ["unit switch", "delete"])
def test_a_budget_changed_by_the_shell_under_a_hold_settles_as_the_general_path(
    tmp_path: Path, change: str
) -> None:
    """The shell bypasses the ledger's rule that a budget holding anything keeps its unit (and,
    its foreign keys off, leaves a deleted budget's windows behind): the general path then
    counts nothing into used there (its counters never take another unit), and so must the
    lean commit of a hold made before the change."""
    dumps = []
    for kind in ("general", "lean"):
        path = tmp_path / f"{kind}.db"
        ledger = open_ledger(f"sqlite:///{path}", clock=FakeClock())
        try:
            if kind == "general":
                ledger._fast = None
            ledger.set_budget("project:a", limit="10", window="day")
            warm(ledger, ["project:a"])
            res = ledger.reserve("2", ["project:a"])
            with closing(sqlite3.connect(path)) as shell, shell:
                if change == "unit switch":
                    shell.execute("UPDATE budgets SET unit = 'credits' WHERE scope = 'project:a'")
                else:
                    shell.execute("DELETE FROM budgets WHERE scope = 'project:a'")
            assert ledger.commit(res, actual="1").status == "committed"
            dumps.append(dump(ledger))
        finally:
            ledger.close()
    assert dumps[1] == dumps[0]
    assert [w[2:] for w in dumps[1]["windows"]] == [(0, 0)]  # held 2 given back, 1 counted nowhere


def test_a_ledger_whose_change_counter_row_was_deleted_still_reserves_and_settles(
    url: str, clock: FakeClock
) -> None:
    """A ledger wiped table by table in the shell loses the counter's row too: the lean path
    cannot tell whether the budgets changed, so the general path serves every call."""
    led = open_ledger(url, clock=clock)
    try:
        led.set_budget("project:a", limit="10", window="day")
        warm(led, ["project:a"])
        held = led.reserve("2", ["project:a"])
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as shell, shell:
            shell.execute("DELETE FROM budget_epoch")
            shell.execute("UPDATE budgets SET unit = 'credits' WHERE scope = 'project:a'")
        paths = Paths(led)
        with pytest.raises(UnitMismatch):
            led.reserve("1", ["project:a"])
        assert led.commit(held, actual="1").status == "committed"
        assert paths.taken == ["declined", "general", "lean commit"]
        usage = led.usage("project:a", "day")
        assert (usage.used, usage.reserved) == (Decimal("0"), Decimal("0"))  # 1 unit counts nowhere
    finally:
        led.close()
