"""The seed's ``BudgetGuard`` counts credits; a units client on the same scope is refused, so
credits and units are never added into one budget (issue 11, item 1)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost import BudgetGuard, CostAwareKlingClient, UnitMismatch, ValidationError
from kling_cost.cache import CachePolicy
from kling_cost.guard import CostAwareClient
from kling_cost.kling import KlingClient, RetryPolicy
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.simulator import create_app
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix
from tests.servers import AK, SK, serve


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:  # noqa: F811
    led = open_ledger(ledger_url)
    yield led
    led.close()


@pytest.fixture
def kling() -> Iterator[tuple[KlingClient, object]]:
    app = create_app(AK, SK, task_seconds=0.2, failure_rate=0)
    with serve(app) as url, KlingClient(AK, SK, base_url=url, retry=RetryPolicy(base_delay=0)) as client:
        yield client, app.state.simulator


def test_budget_guard_counts_credits(ledger: Ledger) -> None:
    guard = BudgetGuard(daily_limit=100, ledger=ledger)
    assert guard.unit == "credits"
    assert ledger.get_budget("account", "day").unit == "credits"  # type: ignore[union-attr]
    guard.check(70)
    [res] = ledger.reservations()
    assert (res.unit, res.catalog) == ("credits", "kling-app-credits")
    guard.record(70)
    guard.record(10)  # nothing checked: a direct charge, in credits too
    assert {c.unit for c in ledger.charges()} == {"credits"}
    assert guard.usage_report["used"] == 80
    with pytest.raises(RuntimeError, match=r"80 \+ 30 > 100 credits") as info:
        guard.check(30)
    assert info.value.unit == "credits"  # type: ignore[attr-defined]


def test_a_units_client_next_to_the_seed_guard_is_refused(
    ledger: Ledger, kling: tuple[KlingClient, object]
) -> None:
    """Before: the guard's 10 credits and the client's 2.5 units were added into one budget."""
    client, sim = kling
    budget = BudgetGuard(daily_limit=100, ledger=ledger)
    seed_client = CostAwareKlingClient(client, budget)
    seed_client.text_to_video("a fox", duration=5, mode="standard")
    assert budget.usage_report["used"] == 10
    guarded = CostAwareClient(client, ledger, cache=CachePolicy(enabled=False))
    with pytest.raises(UnitMismatch) as info:
        guarded.text_to_video("a fox", model_name="kling-v2-6", mode="pro", duration=5)
    assert (info.value.scope, info.value.budget_unit, info.value.request_unit) == (
        "account",
        "credits",
        "units",
    )
    assert len(sim.state.tasks) == 1  # type: ignore[attr-defined]  # only the seed client's task
    u = ledger.usage("account", "day")
    assert (u.used, u.reserved, u.unit) == (Decimal(10), 0, "credits")
    assert {c.unit for c in ledger.charges()} == {"credits"}


def test_budget_guard_on_a_used_units_budget_is_a_clear_error(ledger: Ledger) -> None:
    ledger.set_budget("account", 100)
    ledger.charge(5, unit="units")
    with pytest.raises(ValidationError, match=r"counts units .* cannot switch to credits"):
        BudgetGuard(daily_limit=100, ledger=ledger)
    assert ledger.get_budget("account", "day").unit == "units"  # type: ignore[union-attr]


def test_budget_guard_by_url_default_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    BudgetGuard(daily_limit=50, ledger=url).check(10)
    with open_ledger(url) as led:
        assert led.usage("account").unit == "credits" and led.usage("account").reserved == 10


def test_settle_never_frees_a_budget_guard_hold(ledger_url: str, kling: tuple[KlingClient, object]) -> None:  # noqa: F811
    """Before: `kling-cost settle` asked Kling for the seed guard's reservation id (never sent
    to Kling), heard "no such task" and freed the hold of a generation still running; the
    guard's `record` then failed and another worker got the freed credits (overspend)."""
    from tests.helpers import FakeClock

    client, _sim = kling
    clock = FakeClock()
    with open_ledger(ledger_url, clock=clock) as ledger:
        budget = BudgetGuard(daily_limit=100, ledger=ledger)
        budget.check(70)  # the seed's flow: check, call Kling with its own client, record
        clock.advance(minutes=10)  # a long generation; meanwhile a cron job settles
        with CostAwareClient(client, ledger, cache=False) as settler:
            report = settler.settle_pending()
        assert report.released == [] and report.errors == []
        with pytest.raises(RuntimeError, match="Daily budget exceeded"):
            budget.check(70)  # the 70 are still held
        budget.record(70)
        u = ledger.usage("account", "day")
        assert (u.used, u.reserved) == (Decimal(70), 0)
