"""Threshold evaluation and the outbox: one row per crossing, cleared on rollover and raised limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from kling_cost import BudgetExceeded, ValidationError
from kling_cost.alerts import AlertMessage, Backoff, Deliverer
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.hooks import WindowState
from kling_cost.ledger.records import BUDGET_SELECT, budget_row, reservation_by
from tests.helpers import FakeClock


def crossings(ledger: Ledger, **filters: object) -> list[tuple[str, str, str]]:
    return sorted((a.window_key, a.kind, a.threshold) for a in ledger.alerts(**filters))  # type: ignore[arg-type]


def test_each_threshold_fires_once_counting_reserved_credits(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 100)
    first = ledger.reserve(49, ["project:film"])
    assert ledger.alerts() == []
    ledger.reserve(1, ["project:film"])  # 50 reserved (nothing used yet): the seed's used + needed
    assert crossings(ledger) == [("2026-06-15", "threshold", "0.5")]
    ledger.commit(first, 49)
    ledger.reserve(29, ["project:film"])  # 79
    assert len(ledger.alerts()) == 1
    ledger.reserve(1, ["project:film"])  # 80
    ledger.reserve(20, ["project:film"])  # 100
    assert crossings(ledger) == [("2026-06-15", "threshold", t) for t in ("0.5", "0.8", "1")]
    [full] = ledger.alerts(scope="project:film", limit=1)
    assert (full.threshold, full.used, full.reserved, full.limit) == ("1", 49, 51, 100)
    assert full.status == "pending" and full.attempts == 0 and full.cleared_at is None
    assert "project:film day budget (2026-06-15) reached 100% of its limit: 100 of 100" in full.message
    assert full.details["remaining"] == "0.000" and full.details["trigger"] == "reserve"


def test_a_commit_above_the_estimate_crosses(ledger: Ledger) -> None:
    ledger.set_budget("account", 10, thresholds=["0.8"])
    r = ledger.reserve(5)
    ledger.commit(r, 9)
    [alert] = ledger.alerts()
    assert (alert.threshold, alert.used, alert.details["trigger"]) == ("0.8", 9, "commit")
    ledger.commit(ledger.reserve(1), 1)  # already crossed: nothing new
    assert len(ledger.alerts()) == 1


def test_refusals_alert_once_per_window(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("project:film", 100, max_per_request=35, thresholds=["1"])
    ledger.reserve(30, ["project:film"])
    for amount in (36, 40):
        with pytest.raises(BudgetExceeded):
            ledger.reserve(amount, ["project:film"])
    ledger.reserve(35, ["project:film"])
    ledger.reserve(35, ["project:film"])  # 100: the 100 % crossing
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            ledger.reserve(1, ["project:film"])
    kinds = {a.kind: a for a in ledger.alerts()}
    assert sorted(kinds) == ["max_per_request", "refused", "threshold"]
    assert kinds["max_per_request"].details["requested"] == "36.000"
    assert "above the per-request maximum of 35" in kinds["max_per_request"].message
    assert (
        "refused a request of 1 unit: 100 of 100 units used or reserved, 0 units remaining"
        in kinds["refused"].message
    )
    clock.advance(days=1)
    with pytest.raises(BudgetExceeded):
        ledger.reserve(50, ["project:film"])
    assert [a.window_key for a in ledger.alerts(include_cleared=False)] == ["2026-06-16"]


def test_eight_threads_crossing_80_percent_at_once_make_one_alert_and_one_delivery(
    ledger_url: str, clock: FakeClock
) -> None:
    setup = open_ledger(ledger_url, clock=clock)
    setup.set_budget("project:film", 100)
    setup.reserve(75, ["project:film"])  # 75 %: past 50 %, just below 80 %
    received: list[AlertMessage] = []
    lock = threading.Lock()

    def record(message: AlertMessage) -> None:
        with lock:
            received.append(message)

    ledgers = [open_ledger(ledger_url, clock=clock) for _ in range(8)]
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def worker(led: Ledger) -> None:
        # Each thread is its own process-like peer: its own ledger object and deliverer.
        deliverer = Deliverer(led, [record], backoff=Backoff.none())
        barrier.wait()
        try:
            led.reserve(5, ["project:film"])
            outcome = "reserved"
        except BudgetExceeded:
            outcome = "refused"
        deliverer.deliver_pending()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(led,)) for led in ledgers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == ["refused"] * 3 + ["reserved"] * 5  # 75 + 5 x 5 = 100
        eighty = setup.alerts()
        assert [a.threshold for a in eighty if a.kind == "threshold"].count("0.8") == 1
        Deliverer(setup, [record], backoff=Backoff.none()).deliver_pending()
        counted = [m.threshold for m in received]
        assert counted.count("0.8") == 1 and counted.count("0.5") == 1 and counted.count("1") == 1
        assert counted.count("refused") == 1 and len(received) == 4
        assert all(a.status == "delivered" for a in setup.alerts())
    finally:
        for led in ledgers:
            led.close()
        setup.close()


def test_a_new_day_clears_yesterdays_alerts_and_they_fire_again(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("project:film", 100)
    ledger.reserve(85, ["project:film"])
    assert crossings(ledger, include_cleared=False) == [
        ("2026-06-15", "threshold", t) for t in ("0.5", "0.8")
    ]
    clock.advance(days=1)
    ledger.reserve(10, ["project:film"])  # the first reservation of the day notices the rollover
    old = ledger.alerts()
    assert all(a.cleared_at == clock() and a.resolved_status == "pending" for a in old)
    ledger.reserve(75, ["project:film"])  # 85 today
    assert crossings(ledger, include_cleared=False) == [
        ("2026-06-16", "threshold", t) for t in ("0.5", "0.8")
    ]
    assert len(ledger.alerts()) == 4


def test_a_deliverer_clears_ended_windows_when_nobody_reserves(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("project:film", 100, window="week")
    ledger.reserve(90, ["project:film"])
    got: list[AlertMessage] = []
    deliverer = Deliverer(ledger, [got.append], backoff=Backoff.none())
    assert deliverer.deliver_pending().delivered == 2
    clock.advance(days=7)
    report = deliverer.deliver_pending()
    assert (report.cleared, report.resolved) == (2, 2)
    assert [m.event for m in got] == ["alert", "alert", "resolved", "resolved"]
    assert got[-1].reason == "the week window 2026-W25 ended"
    assert all(a.resolved_status == "delivered" and a.resolved_at == clock() for a in ledger.alerts())
    assert deliverer.deliver_pending().claimed == 0


def test_raising_the_limit_clears_crossings_below_it_and_lowering_fires(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 100)
    ledger.reserve(85, ["project:film"])
    ledger.set_budget("project:film", 150)  # 85 = 57 %: 80 % no longer holds, 50 % still does
    active = crossings(ledger, include_cleared=False)
    assert active == [("2026-06-15", "threshold", "0.5")]
    [cleared] = [a for a in ledger.alerts() if a.cleared_at is not None]
    assert cleared.threshold == "0.8" and cleared.resolved_status == "pending"
    ledger.reserve(40, ["project:film"])  # 125 of 150: crosses 80 % of the new limit again
    [again] = [a for a in ledger.alerts() if a.threshold == "0.8"]
    assert (again.id, again.cleared_at, again.status, again.limit) == (cleared.id, None, "pending", 150)
    ledger.set_budget("project:film", 120)  # lowered: 125 is past 100 % now
    assert [a.threshold for a in ledger.alerts(include_cleared=False)].count("1") == 1


def test_a_late_commit_in_an_ended_window_does_not_alert(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("account", 100, thresholds=["0.9"])
    r = ledger.reserve(50, ttl=timedelta(days=1))
    clock.advance(hours=13)  # the task finishes after midnight; it counts for yesterday
    ledger.commit(r, 95)
    assert ledger.usage("account", at=clock() - timedelta(days=1)).used == Decimal(95)
    assert ledger.alerts() == []


def test_the_common_path_runs_no_sql(
    ledger: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.set_budget("account", 1000)
    reserved = ledger.reserve(10)  # the first sight of the window clears older ones, once
    with ledger.transaction() as cur:  # the rows the hooks see: amounts in thousandths
        cur.execute(BUDGET_SELECT)
        [budget] = [budget_row(row) for row in cur.fetchall()]
        reservation = reservation_by(cur, "id", reserved.id)
    assert reservation is not None
    assert (budget.limit_milli, reservation.amount_milli) == (1_000_000, 10_000)

    class NoSQL:
        rowcount = 0

        def __init__(self) -> None:
            self.executed: list[str] = []

        def execute(self, sql: str, params: object = ()) -> None:
            self.executed.append(sql)

    cur = NoSQL()
    writer = ledger.outbox.writer
    below = [WindowState(budget, "2026-06-15", 300_000, 100_000)]  # 30 % -> 40 %: nothing crossed
    for _ in range(100):
        writer.after_reserve(cur, clock(), reservation, below)  # type: ignore[arg-type]
    assert cur.executed == []
    crossing = [WindowState(budget, "2026-06-15", 400_000, 100_000)]  # 49 % -> 50 %
    writer.after_reserve(cur, clock(), reservation, crossing)  # type: ignore[arg-type]
    assert len(cur.executed) == 1 and cur.executed[0].startswith("INSERT INTO alerts")
    # A plain commit (the actual is what was held) does not read the budgets back for the hooks.
    executed: list[str] = []
    real = ledger.backend.transaction

    @contextmanager
    def spied(**options: Any) -> Iterator[Any]:
        with real(**options) as inner:
            yield _Spy(inner, executed)

    monkeypatch.setattr(ledger.backend, "transaction", spied)
    ledger.commit(ledger.reserve(10), 10)
    # (On PostgreSQL that pair is one statement each, no general transaction at all.)
    assert executed or ledger._fast is not None
    assert not [sql for sql in executed if sql.startswith(BUDGET_SELECT + " WHERE id IN")]
    ledger.commit(ledger.reserve(10), 11)  # above what was held: the level rose, the outbox looks
    assert [sql for sql in executed if sql.startswith(BUDGET_SELECT + " WHERE id IN")]


class _Spy:
    """A cursor that notes every statement it runs."""

    def __init__(self, cur: Any, executed: list[str]) -> None:
        self._cur, self._executed = cur, executed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._executed.append(sql)
        return self._cur.execute(sql, params)


def test_deleting_a_budget_clears_its_alerts(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 10, thresholds=["0.5"])
    ledger.reserve(6, ["project:film"])
    assert ledger.delete_budget("project:film", "day")
    [alert] = ledger.alerts()
    assert alert.cleared_at is not None and alert.resolved_status == "pending"
    got: list[AlertMessage] = []
    Deliverer(ledger, [got.append]).deliver_pending()
    assert [m.event for m in got] == ["alert", "resolved"] and got[1].reason == "the budget was deleted"


@pytest.mark.parametrize("empty", [[], (), set()], ids=["list", "tuple", "set"])
def test_an_empty_threshold_list_is_refused_and_changes_nothing(ledger: Ledger, empty: object) -> None:
    ledger.set_budget("project:film", 100, thresholds=["0.5"])
    with pytest.raises(ValidationError, match="alerts=False"):
        ledger.set_budget("project:film", 200, thresholds=empty)  # type: ignore[arg-type]
    [budget] = ledger.budgets("project:film")
    assert (budget.limit, budget.thresholds) == (100, (Decimal("0.5"),))
    ledger.reserve(60, ["project:film"])
    assert crossings(ledger) == [("2026-06-15", "threshold", "0.5")]


def test_alerts_false_is_the_explicit_way_to_switch_threshold_alerts_off(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="not both"):
        ledger.set_budget("project:quiet", 10, thresholds=["0.5"], alerts=False)
    with pytest.raises(ValidationError, match="True or False"):
        ledger.set_budget("project:quiet", 10, alerts="no")  # type: ignore[arg-type]
    assert ledger.budgets() == []
    quiet = ledger.set_budget("project:quiet", 10, alerts=False)
    assert quiet.thresholds == () and quiet.to_dict()["thresholds"] == []
    ledger.reserve(10, ["project:quiet"])
    assert ledger.alerts() == []  # 100 % used, no threshold alert
    with pytest.raises(BudgetExceeded):
        ledger.reserve(1, ["project:quiet"])
    assert crossings(ledger) == [("2026-06-15", "refused", "refused")]  # a refusal still alerts
    assert ledger.set_budget("project:quiet", 10).thresholds == tuple(
        Decimal(t) for t in ("0.5", "0.8", "1")
    )  # thresholds=None: the default again


@pytest.mark.parametrize("limit", [0, -1, True, "5"])
def test_alerts_limit_must_be_a_positive_whole_number(ledger: Ledger, limit: object) -> None:
    ledger.set_budget("account", 10, thresholds=["0.1", "0.2"])
    ledger.reserve(5)
    with pytest.raises(ValidationError, match="limit"):
        ledger.alerts(limit=limit)  # type: ignore[arg-type]
    assert len(ledger.alerts(limit=1)) == 1
