"""Resource packs: the wide window, the shared 1 call/s limit, the burn rate and the units at
risk (exact), the snapshot in the ledger, budgets kept from packs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kling_cost import BudgetExceeded
from kling_cost.bill.pack_budgets import follow_packs, pack_budgets, refresh_pack_budgets
from kling_cost.bill.packs import CostsLimiter, load_snapshot, pack_type_of, project, take_snapshot
from kling_cost.errors import KlingAPIError
from kling_cost.kling.models import ResourcePack
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.bill_store import BillStore
from tests.bill.conftest import DAY, Bill
from tests.helpers import FakeClock

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
D = 86_400_000


def _pack(
    name: str, remaining: str, *, expires_day: float, effective_day: float = -1, status: str = "online"
) -> ResourcePack:
    now = int(NOW.timestamp() * 1000)
    return ResourcePack(
        resource_pack_name=name,
        resource_pack_id=f"id-{name}",
        resource_pack_type="decreasing_total",
        total_quantity=Decimal(1000),
        remaining_quantity=Decimal(remaining),
        purchase_time=now - 40 * D,
        effective_time=now + int(effective_day * D),
        invalid_time=now + int(expires_day * D),
        status=status,
    )


def test_the_burn_is_spent_in_expiry_order_and_the_rest_is_at_risk() -> None:
    """Video burn 70 units a week = 10 a day. A (50, expires day 3) takes 30 and keeps 20;
    B (100, day 8) burns from day 3 to 8: 50, keeps 50; C (40, online from day 10 to 20) burns
    out on day 14: nothing at risk. D (20, day 1.5... runs out) shows the run-out case:
    it is spent before anything else (expires first) in 2 days > 1.5: keeps 5."""
    packs = [
        _pack("video B", "100", expires_day=8),
        _pack("video A", "50", expires_day=3),
        _pack("video C", "40", expires_day=20, effective_day=10, status="toBeOnline"),
        _pack("image I", "300", expires_day=2),
        _pack("video old", "7", expires_day=-1, status="expired"),
    ]
    out = {p.name: p for p in project(packs, now=NOW, weekly_burn={"video": Decimal(70)})}
    assert out["video A"].units_used == 30 and out["video A"].units_at_risk == 20
    assert out["video B"].units_used == 50 and out["video B"].units_at_risk == 50
    assert out["video C"].units_used == 40 and out["video C"].units_at_risk == 0
    assert out["image I"].units_at_risk == 300 and out["image I"].burn_per_day == 0  # no burn
    assert out["video old"].units_at_risk == 0 and out["video old"].units_lost == 7
    assert out["video A"].days_left == 3 and out["video old"].days_left == 0
    assert out["video A"].burn_per_day == 10

    running_out = [_pack("video A", "20", expires_day=3), _pack("video B", "100", expires_day=8)]
    out = {p.name: p for p in project(running_out, now=NOW, weekly_burn={"video": Decimal(70)})}
    assert out["video A"].units_at_risk == 0  # empty on day 2
    assert out["video B"].units_used == 60 and out["video B"].units_at_risk == 40  # days 2..8

    thirds = project([_pack("video A", "10", expires_day=1)], now=NOW, weekly_burn={"video": Decimal(3)})
    assert thirds[0].units_at_risk == Decimal("9.572")  # 10 - 3/7, rounded up: never says less


def test_pack_types_come_from_the_name_or_the_overrides() -> None:
    assert pack_type_of("Video Generation 1000") == "video"
    assert pack_type_of("Kolors image pack") == "image"
    assert pack_type_of("Virtual Try-On") == "tryon"
    assert pack_type_of("Starter bundle") == "unknown"
    assert pack_type_of("Starter bundle", "p-1", {"p-1": "image"}) == "image"


def test_the_limiter_keeps_one_call_a_second_across_ledgers(ledger: Ledger, ledger_url: str) -> None:
    now = [1_000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    first = CostsLimiter(BillStore(ledger), clock=lambda: now[0], sleep=sleep)
    with open_ledger(ledger_url) as other:  # another process's ledger object on the same database
        second = CostsLimiter(BillStore(other), clock=lambda: now[0], sleep=sleep)
        assert first.wait() == 0
        now[0] += 0.25
        assert second.wait() == pytest.approx(0.75)  # same second: waits the rest of it
        assert first.wait() == pytest.approx(1.0)  # the next slot is a full second later
        now[0] += 5
        assert second.wait() == 0
    assert slept == [pytest.approx(0.75), pytest.approx(1.0)]


def test_bill_store_values(ledger: Ledger) -> None:
    store = BillStore(ledger)
    assert store.get("x") is None
    store.set("x", {"a": [1, "2"]})
    store.set("x", {"a": [3]})
    assert store.get("x") == {"a": [3]}
    assert store.delete("x") and store.get("x") is None


def _charge(ledger: Ledger, units: str, kind: str = "text2video") -> None:
    r = ledger.reserve(Decimal(units), ["project:film"], metadata={"kind": kind})
    ledger.commit(r, Decimal(units))


def test_a_snapshot_lists_a_pack_bought_43_days_ago_with_the_ledgers_burn(bill: Bill) -> None:
    now = bill.now_ms()
    state = bill.sim.state
    state.add_pack(
        "video", 200, purchase_time=now - 43 * DAY * 1000, effective_time=now - 43 * DAY * 1000,
        invalid_time=now + 7 * DAY * 1000, name="video pack bought 43 days ago",
    )  # fmt: skip
    state.add_pack(
        "image", 100, purchase_time=now - 390 * DAY * 1000, effective_time=now - 390 * DAY * 1000,
        invalid_time=now + 10 * DAY * 1000, name="image long pack",
    )  # fmt: skip
    # A week of video burn in the ledger: 14 units (2 a day), images 0; credits never count.
    bill.clock.advance(days=-6.5)
    for _ in range(7):  # from 6.5 days to 12 hours ago
        _charge(bill.ledger, "2")
        bill.clock.advance(days=1)
    bill.clock.advance(days=-0.5)  # back to now
    r = bill.ledger.reserve(Decimal(5), ["project:other"], unit="credits", metadata={"kind": "text2video"})
    bill.ledger.commit(r, Decimal(5))
    ticks = [bill.sim_clock.now()]
    with bill.kling() as client:
        snap = take_snapshot(
            client,
            bill.ledger,
            limiter=CostsLimiter(BillStore(bill.ledger), clock=lambda: ticks[0], sleep=lambda s: None),
        )
    packs = {p.name: p for p in snap.packs}
    old = packs["video pack bought 43 days ago"]
    assert old.pack_type == "video" and old.remaining == 200 and old.status == "online"
    assert old.burn_per_day == 2 and old.units_used == 14 and old.units_at_risk == 186
    assert old.usd_left == Decimal("28.000") or old.usd_left == Decimal("28")
    assert old.days_left == 7
    assert old.charged_recently == 2  # the last 12 h of charges remaining_quantity may not show
    assert packs["image long pack"].units_at_risk == 100
    assert packs["image long pack"].usd_left == Decimal("0.35")
    assert snap.window_start <= datetime.fromtimestamp(now / 1000 - 390 * DAY, UTC)
    saved = load_snapshot(bill.ledger)
    assert saved == snap and saved.to_dict()["packs"][0]["remaining_note"].startswith("remaining_quantity")


def test_a_budget_from_packs_refuses_before_kling_answers_1102(bill: Bill) -> None:
    now = bill.now_ms()
    bill.sim.state.add_pack(
        "video",
        3,
        purchase_time=now,
        effective_time=now,
        invalid_time=now + 30 * DAY * 1000,
        name="small video",
    )
    bill.ledger.set_budget("account", 100, "lifetime")
    _charge(bill.ledger, "4", kind="image")  # lifetime use on account before: the limit adds it
    bill.clock.advance(days=1)  # out of the 12 h lag
    with bill.kling() as client:
        snap = take_snapshot(client, bill.ledger)
    kept = follow_packs(bill.ledger, "account", "video", snap)
    assert kept.limit == 7 and kept.used == 4 and kept.packs_remaining == 3
    assert pack_budgets(bill.ledger) == {"account": "video"}
    usage = bill.ledger.usage("account", "lifetime")
    assert usage.remaining == 3
    bill.ledger.reserve(Decimal("1.5"), ["project:film"])
    bill.ledger.reserve(Decimal("1.5"), ["project:film"])
    with pytest.raises(BudgetExceeded):
        bill.ledger.reserve(Decimal("1.5"), ["project:film"])  # the ledger says no first...
    with bill.kling() as client:  # ...where Kling, asked directly, would answer 1102 after two
        for _ in range(2):
            client.text_to_video("p", model_name="kling-v2-6", duration="5")
        with pytest.raises(KlingAPIError) as info:
            client.text_to_video("p", model_name="kling-v2-6", duration="5")
    assert info.value.code == 1102
    bill.sim.state.add_pack(
        "video",
        10,
        purchase_time=now,
        effective_time=now,
        invalid_time=now + 30 * DAY * 1000,
        name="more video",
    )
    with bill.kling() as client:
        fresh = take_snapshot(
            client, bill.ledger, limiter=CostsLimiter(BillStore(bill.ledger), sleep=lambda s: None)
        )
    [again] = refresh_pack_budgets(bill.ledger, fresh)
    assert again.packs_remaining == 13 and again.limit == 17


def test_from_packs_refuses_a_credits_budget(ledger: Ledger, clock: FakeClock) -> None:
    from kling_cost.bill.packs import PackSnapshot

    ledger.set_budget("account", 10, "lifetime", unit="credits")
    empty = PackSnapshot(
        taken_at=clock(), window_start=clock() - timedelta(days=1), window_end=clock(), packs=()
    )
    with pytest.raises(ValueError, match="counts credits"):
        follow_packs(ledger, "account", "video", empty)
