"""Item 4 of issue 11: one idempotency key, one request. The same request again gets the first
reservation; a different amount or other scopes under the key raise IdempotencyConflict and
hold nothing; a key released before Kling accepted anything may be reserved again."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from kling_cost import IdempotencyConflict, KlingCostError, ValidationError
from kling_cost.ledger import Ledger
from tests.helpers import FakeClock


def _budgets(ledger: Ledger) -> None:
    ledger.set_budget("project:big", 100)
    ledger.set_budget("project:small", 100)


def test_a_different_amount_or_scope_under_a_key_is_refused(ledger: Ledger) -> None:
    _budgets(ledger)
    first = ledger.reserve(8, ["project:big"], idempotency_key="k")
    with pytest.raises(IdempotencyConflict) as info:
        ledger.reserve(5, ["project:small"], idempotency_key="k")
    err = info.value
    assert isinstance(err, ValidationError) and isinstance(err, KlingCostError)
    assert err.key == "k" and err.reservation_id == first.id
    assert err.differences == (
        ("amount", "8", "5"),
        ("scopes", "account, project:big", "account, project:small"),
    )
    assert "amount 8 vs 5" in str(err) and "project:small" in str(err) and "\n" not in str(err)
    with pytest.raises(IdempotencyConflict) as only_scopes:
        ledger.reserve(8, ["project:small"], idempotency_key="k")
    assert only_scopes.value.fields == ("scopes",)
    with pytest.raises(IdempotencyConflict) as only_amount:
        ledger.reserve("8.001", ["project:big"], idempotency_key="k")
    assert only_amount.value.fields == ("amount",)
    # nothing was held by the refused requests
    assert ledger.usage("project:small").reserved == 0
    assert ledger.usage("project:big").reserved == 8
    assert [r.id for r in ledger.reservations()] == [first.id]


def test_the_same_request_again_returns_the_first_reservation(ledger: Ledger) -> None:
    _budgets(ledger)
    first = ledger.reserve(8, ["project:big"], idempotency_key="k", metadata={"try": 1})
    again = ledger.reserve(
        Decimal("8.000"), ["project:big", "account"], idempotency_key="k", metadata={"try": 2}
    )
    assert again.id == first.id and first.fresh and not again.fresh
    assert ledger.usage("project:big").reserved == 8
    ledger.commit(first, 7)
    settled = ledger.reserve("8", "project:big", idempotency_key="k")
    assert (settled.id, settled.status, settled.actual) == (first.id, "committed", 7)
    with pytest.raises(IdempotencyConflict, match="committed"):
        ledger.reserve(80, ["project:big"], idempotency_key="k")
    assert ledger.usage("project:big").used == 7 and len(ledger.charges()) == 1


def test_a_key_released_before_kling_accepted_may_be_reserved_again(ledger: Ledger, clock: FakeClock) -> None:
    _budgets(ledger)
    ledger.release(ledger.reserve(8, ["project:big"], idempotency_key="k"))
    again = ledger.reserve(5, ["project:small"], idempotency_key="k")  # nothing was charged
    assert again.revived and again.fresh and (again.amount, again.scopes) == (5, ("account", "project:small"))
    assert (ledger.usage("project:small").reserved, ledger.usage("project:big").reserved) == (5, 0)
    clock.advance(hours=1)  # its lease expires: the same holds for an expired one
    ledger.sweep()
    third = ledger.reserve(3, ["project:big"], idempotency_key="k", ttl=timedelta(minutes=5))
    assert third.revived and third.amount == 3 and ledger.usage("project:big").reserved == 3


def test_a_key_kling_accepted_is_never_reserved_for_another_request(ledger: Ledger) -> None:
    _budgets(ledger)
    res = ledger.reserve(8, ["project:big"], idempotency_key="k")
    ledger.attach_task(res, "task-1")
    ledger.release(res)  # the task failed: a 0 charge, but the key belongs to that task
    with pytest.raises(IdempotencyConflict):
        ledger.reserve(5, ["project:big"], idempotency_key="k")
    assert ledger.reserve(8, ["project:big"], idempotency_key="k").status == "released"


def test_charge_and_cache_hits_follow_the_same_rule(ledger: Ledger) -> None:
    _budgets(ledger)
    done = ledger.charge(10, ["project:big"], idempotency_key="c", task_id="t1")
    assert ledger.charge(10, ["project:big"], idempotency_key="c", task_id="t1").id == done.id
    with pytest.raises(IdempotencyConflict) as info:
        ledger.charge(12, ["project:big"], idempotency_key="c")
    assert info.value.fields == ("amount",)
    assert ledger.usage("project:big").used == 10 and len(ledger.charges()) == 1
    assert ledger.record_cache_hit(4, ["project:small"], idempotency_key="h") is True
    assert ledger.record_cache_hit(4, ["project:small"], idempotency_key="h") is False
    with pytest.raises(IdempotencyConflict):
        ledger.record_cache_hit(4, ["project:big"], idempotency_key="h")
    with pytest.raises(IdempotencyConflict):
        ledger.record_cache_hit(3, ["project:big"], idempotency_key="c")  # the key of a charge
    assert len(ledger.charges()) == 2
