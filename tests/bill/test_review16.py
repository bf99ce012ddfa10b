"""Regression tests from the outside review of issue 16 (the bill)."""

from __future__ import annotations

from decimal import Decimal

from kling_cost.bill.reconcile import reconcile
from tests.bill.test_reconcile import World, world  # noqa: F401 - the simulator and both backends


def test_fix_does_not_record_a_task_whose_reservation_is_still_open(world: World) -> None:  # noqa: F811
    """A guarded task Kling has billed but the guard has not settled yet is known to the ledger:
    --fix must not record it as a late charge (the guard's commit would count it twice)."""
    with world.guard() as guard:
        task = guard.text_to_video("a fox", model_name="kling-v2-6", mode="pro", duration=5)
        world.finish()  # Kling ended and billed it; the guard has not polled yet
        with world.kling() as client:
            result = reconcile(world.ledger, client, fix=True)
        assert result.fixed == () and not result.clean
        assert any(task.task_id in p and "not settled yet" in p for p in result.problems)
        done = guard.wait(task, poll=0.01)
    assert done.succeeded
    with world.kling() as client:
        assert reconcile(world.ledger, client, fix=True).clean
    charged = world.ledger.totals()["units"]["charged"]
    kling = sum((c.amount for c in world.sim.state.accounts.charges if c.funding == "unit"), Decimal(0))
    assert charged == kling
