"""Alerts carry the budget's unit beside every amount, and their top consumers only count
charges in that unit (issue 11, item 1)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kling_cost import BudgetExceeded
from kling_cost.alerts import AlertMessage, CallbackSink, Deliverer
from kling_cost.ledger import Ledger


def _deliver(ledger: Ledger) -> list[AlertMessage]:
    got: list[AlertMessage] = []
    with Deliverer(ledger, [CallbackSink(got.append, resolved=False)]) as deliverer:
        deliverer.deliver_pending()
    return got


def test_threshold_alert_in_credits(ledger: Ledger) -> None:
    ledger.set_budget("account", 500, thresholds=["0.8"], unit="credits")
    ledger.reserve(400, unit="credits", metadata={"model": "kling-v2-6", "mode": "pro"})
    [alert] = ledger.alerts()
    assert alert.message == (
        "account day budget (2026-06-15) reached 80% of its limit: 400 of 500 credits used or "
        "reserved, 100 credits remaining"
    )
    assert alert.details["unit"] == alert.unit == alert.to_dict()["unit"] == "credits"
    [message] = _deliver(ledger)
    assert message.unit == "credits" and message.to_dict()["unit"] == "credits"
    assert message.title == "account day budget at 80% (400 / 500 credits)"
    body = message.body()
    assert "= 400 of 500 credits (80%)" in body and "Remaining:  100 credits" in body


def test_refusal_and_per_request_alerts_in_credits(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 100, max_per_request=80, unit="credits")
    ledger.set_budget("account", 1000, unit="credits")
    ledger.reserve(70, ["project:film"], unit="credits")
    with pytest.raises(BudgetExceeded):
        ledger.reserve(70, ["project:film"], unit="credits")
    with pytest.raises(BudgetExceeded, match="90 credits exceeds the per-request maximum of 80 credits"):
        ledger.reserve(90, ["project:film"], unit="credits")
    kinds = {a.kind: a for a in ledger.alerts(scope="project:film")}
    assert kinds["refused"].message.endswith(
        "refused a request of 70 credits: 70 of 100 credits used or reserved, 30 credits remaining"
    )
    assert kinds["max_per_request"].message.endswith(
        "refused a request of 90 credits: above the per-request maximum of 80 credits"
    )


def test_top_consumers_only_count_the_budgets_unit(ledger: Ledger) -> None:
    # Charges in units on project:film before it had a budget (nothing refused them then) ...
    ledger.charge(7, ["project:film"], unit="units", metadata={"model": "kling-v1", "mode": "pro"})
    ledger.charge(9, ["project:film", "key:bob"], unit="units", metadata={"model": "kling-v1", "mode": "pro"})
    # ... then a credits budget (account has none) and credits spent on it.
    ledger.set_budget("project:film", 100, thresholds=["0.5"], unit="credits")
    ledger.commit(
        ledger.reserve(
            70, ["project:film", "key:alice"], unit="credits", metadata={"model": "kling-v1", "mode": "pro"}
        ),
        70,
    )
    [message] = _deliver(ledger)
    assert message.unit == "credits"
    consumers = {(c.by, c.name): (c.amount, c.count) for c in message.top_consumers}
    assert consumers == {
        ("model", "kling-v1/pro"): (Decimal(70), 1),  # not 86: the units charges are not credits
        ("scope", "key:alice"): (Decimal(70), 1),
    }
    assert "70 credits  model/mode kling-v1/pro (1 generation)" in message.body()


def test_resolved_message_names_the_unit(ledger: Ledger) -> None:
    ledger.set_budget("account", 10, thresholds=["0.5"], unit="credits")
    ledger.reserve(5, unit="credits")
    got: list[str] = []
    with Deliverer(ledger, [CallbackSink(got.append, text=True, resolved=True)]) as deliverer:
        deliverer.deliver_pending()
        ledger.set_budget("account", 20)
        deliverer.deliver_pending()
    assert got[0].endswith("5 of 10 credits used or reserved, 5 credits remaining")
    assert got[-1].endswith("the limit was raised from 10 to 20 credits")
