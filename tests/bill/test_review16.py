"""Regression tests from the outside review of issue 16 (the bill)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kling_cost.alerts import Deliverer
from kling_cost.bill.forecast import evaluate, stored_packs
from kling_cost.bill.packs import SNAPSHOT_KEY, CostsLimiter, load_snapshot
from kling_cost.bill.reconcile import reconcile
from kling_cost.ledger import Ledger
from kling_cost.ledger.bill_store import BillStore
from tests.bill.test_reconcile import World, world  # noqa: F401 - the simulator
from tests.ledger.conftest import clock, ledger, ledger_url  # noqa: F401 - the backend matrix


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


# -------------------------------------------------------------------------------- a tampered snapshot

_NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


def _pack(**changes: str) -> dict[str, str]:
    pack = {
        "pack_type": "video",
        "name": "Video pack",
        "id": "p-1",
        "total": "100",
        "remaining": "10",
        "status": "online",
        "invalid_time": (_NOW + timedelta(days=2)).isoformat(),
        "burn_per_day": "0",
        "units_used": "0",
        "units_at_risk": "10",
    }
    return pack | changes


TAMPERED = {
    "naive expiry": _pack(invalid_time=(_NOW + timedelta(days=2)).replace(tzinfo=None).isoformat()),
    "NaN remaining": _pack(remaining="NaN"),
    "infinite at risk": _pack(units_at_risk="Infinity"),
    "number as text": _pack(total="lots"),
}


@pytest.mark.parametrize("name", [*TAMPERED, "not JSON"])
def test_a_tampered_snapshot_is_no_snapshot_and_alerts_still_flow(ledger: Ledger, name: str) -> None:  # noqa: F811
    ledger.set_budget("project:a", 10, "day", thresholds=["0.5"])
    ledger.commit(ledger.reserve(6, ["project:a"]), 6)  # a threshold alert waiting to be delivered
    snap = {
        "taken_at": _NOW.isoformat(),
        "window_start": _NOW.isoformat(),
        "window_end": _NOW.isoformat(),
        "packs": [TAMPERED.get(name, _pack())],
    }
    BillStore(ledger).set(SNAPSHOT_KEY, snap)
    if name == "not JSON":
        with ledger.transaction() as cur:
            cur.execute("UPDATE bill_meta SET value = ? WHERE name = ?", ("{", SNAPSHOT_KEY))
    assert load_snapshot(ledger) is None and stored_packs(ledger) is None
    assert evaluate(ledger, _NOW) == []
    seen: list[object] = []
    with Deliverer(ledger, [seen.append]) as deliverer:
        assert deliverer.deliver_pending().delivered == 1


# -------------------------------------------------------------------------------- the 1 q/s limiter


def test_a_next_call_far_ahead_does_not_stall_packs_for_hours(ledger: Ledger) -> None:  # noqa: F811
    """Another machine whose clock is an hour ahead (or a tampered value) stored the next free
    slot far in the future: the limiter must not sleep until then."""
    now = [1_000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    ahead = CostsLimiter(BillStore(ledger), clock=lambda: now[0] + 3600, sleep=sleep)
    assert ahead.wait() == 0
    limiter = CostsLimiter(BillStore(ledger), clock=lambda: now[0], sleep=sleep)
    assert limiter.wait() <= 1.0
    assert limiter.wait() == pytest.approx(1.0)  # then one call a second again
    BillStore(ledger).set("packs.next_call", 10**15)
    assert limiter.wait() <= 1.0
    assert all(s <= 1.0 for s in slept)
