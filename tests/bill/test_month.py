"""A simulated month (July 2026), day by day on the injected clocks (nothing sleeps), on both
ledger backends: guarded tasks on a known schedule, tasks sent straight to Kling around the
guard, a guarded task that fails (refunded), and a video pack that expires on the 20th.

Each day: that day's tasks run and end, and twice a day (06:00 and 18:00) the packs are
snapshotted from ``/account/costs`` (1 call/s kept by moving the clocks, never by sleeping) and
``evaluate`` writes the ``forecast`` and ``pack-expiry`` alerts due, from the stored snapshot
(as ``kling-cost alerts deliver`` does). At the end of the month ``reconcile`` finds exactly the
bypass tasks, and ``--fix`` makes the ledger's total equal Kling's bill to the unit.

Every expected figure below is computed from the schedule, independently of the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from kling_cost.bill.forecast import evaluate
from kling_cost.bill.packs import CostsLimiter, load_snapshot, take_snapshot
from kling_cost.bill.reconcile import reconcile
from kling_cost.cache import CachePolicy
from kling_cost.cli import app
from kling_cost.guard import CostAwareClient
from kling_cost.ledger import Ledger
from kling_cost.ledger.bill_store import BillStore
from kling_cost.ledger.models import AlertRecord
from tests.bill.conftest import Bill, make_bill
from tests.helpers import FakeClock
from tests.servers import AK, API_KEY, SK

D = Decimal
MONTH = datetime(2026, 7, 1, tzinfo=UTC)
DAYS = 31
SCOPE = "project:film"
LIMIT = D(40)
"""The day budget of project:film: a normal day projects 22 at 06:00, the busy day 52."""
MS = 1000


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return MONTH + timedelta(days=day - 1, hours=hour, minutes=minute)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * MS)


PACK_A_TOTAL = D(150)
PACK_A_EXPIRES = at(20, 12)  # 2026-07-20 12:00 UTC
PACK_B_TOTAL = D(500)
PACK_B_EXPIRES = datetime(2026, 9, 30, tzinfo=UTC)
BUSY_DAY = 9
FAIL_DAY = 15
BYPASS_DAYS = {5: ("std", 10), 12: ("pro", 10), 23: ("std", 5)}
"""Day -> (mode, seconds) of a kling-v2-6 video sent straight to Kling at 04:00."""
EVALUATIONS = (6, 18)
"""Hours of each day at which the packs are snapshotted and the alerts evaluated."""
PRICE = {("std", 5): D("1.5"), ("pro", 5): D("2.5"), ("std", 10): D(3), ("pro", 10): D(5)}
"""kling-v2-6 without sound, in units (the catalog's)."""


@dataclass(frozen=True)
class Job:
    when: datetime
    mode: str
    seconds: int
    route: str
    """``guard``, ``bypass`` (a plain client: the ledger never hears of it) or ``fail`` (guarded, fails)."""

    @property
    def units(self) -> Decimal:
        return D(0) if self.route == "fail" else PRICE[(self.mode, self.seconds)]


def schedule(day: int) -> list[Job]:
    """A normal day: std 5 s at 01:00 and 02:00, pro 5 s at 03:00 (5.5 units). The busy day:
    three more pro 5 s at 01:30, 02:30, 03:30 (13 units). Extras: a failing pro 10 s at 02:15 on
    FAIL_DAY, a bypass task at 04:00 on BYPASS_DAYS."""
    jobs = [
        Job(at(day, 1), "std", 5, "guard"),
        Job(at(day, 2), "std", 5, "guard"),
        Job(at(day, 3), "pro", 5, "guard"),
    ]
    if day == BUSY_DAY:
        jobs += [Job(at(day, h, 30), "pro", 5, "guard") for h in (1, 2, 3)]
    if day == FAIL_DAY:
        jobs.append(Job(at(day, 2, 15), "pro", 10, "fail"))
    if day in BYPASS_DAYS:
        mode, seconds = BYPASS_DAYS[day]
        jobs.append(Job(at(day, 4), mode, seconds, "bypass"))
    return sorted(jobs, key=lambda j: j.when)


ALL_JOBS = [job for day in range(1, DAYS + 1) for job in schedule(day)]


def units_of(route: str, since: datetime, until: datetime) -> Decimal:
    """Units of the scheduled tasks of ``route`` submitted in ``[since, until)``."""
    return sum((j.units for j in ALL_JOBS if j.route == route and since <= j.when < until), D(0))


def billed(since: datetime, until: datetime) -> Decimal:
    """What Kling charges for the tasks submitted in ``[since, until)`` (guarded and bypass)."""
    return units_of("guard", since, until) + units_of("bypass", since, until)


# ---------------------------------------------------------------------------------- the world


@pytest.fixture
def month(ledger: Ledger, clock: FakeClock) -> Iterator[Bill]:  # from tests/ledger/conftest.py
    clock.set(MONTH)
    for world in make_bill(ledger, clock, video_units=0, image_units=0, tryon_units=0):
        state = world.sim.state
        state.add_pack(
            "video",
            PACK_A_TOTAL,
            purchase_time=ms(MONTH - timedelta(days=42)),  # outside any 30-day window
            effective_time=ms(MONTH - timedelta(days=42)),
            invalid_time=ms(PACK_A_EXPIRES),
            name="video pack A",
        )
        state.add_pack(
            "video",
            PACK_B_TOTAL,
            purchase_time=ms(MONTH - timedelta(days=21)),
            effective_time=ms(MONTH - timedelta(days=21)),
            invalid_time=ms(PACK_B_EXPIRES),
            name="video pack B",
        )
        yield world


def advance_to(world: Bill, moment: datetime) -> None:
    delta = (moment - world.clock()).total_seconds()
    assert delta >= 0, (moment, world.clock())
    world.advance(delta)


@dataclass
class Diary:
    """What happened, by day."""

    ids: dict[str, list[str]]
    """Route -> task ids."""
    alerts: dict[datetime, list[AlertRecord]]
    """Evaluation instant -> the alerts it wrote."""
    snapshots: dict[datetime, dict[str, Decimal]]
    """Evaluation instant -> pack name -> units at risk."""
    waited: list[float]


def live_month(world: Bill) -> Diary:
    diary = Diary({"guard": [], "bypass": [], "fail": []}, {}, {}, [])
    store = BillStore(world.ledger)

    def sleep(seconds: float) -> None:  # the limiter's wait moves the clocks, nothing sleeps
        diary.waited.append(seconds)
        world.advance(seconds)

    limiter = CostsLimiter(store, clock=world.sim_clock.now, sleep=sleep)
    with (
        world.kling() as plain,
        CostAwareClient(
            world.kling(), world.ledger, scopes=[SCOPE], cache=CachePolicy(enabled=False)
        ) as guard,
    ):
        for day in range(1, DAYS + 1):
            for job in schedule(day):
                advance_to(world, job.when)
                kwargs = {"model_name": "kling-v2-6", "mode": job.mode, "duration": job.seconds}
                if job.route == "bypass":
                    task_id = plain.text_to_video(f"bypass {day}", **kwargs).task_id
                else:
                    if job.route == "fail":
                        world.sim.state.fail_next(1)
                    task = guard.text_to_video(f"day {day} {job.when:%H:%M}", **kwargs)
                    world.advance(11)  # task_seconds is 10: it has ended
                    done = guard.wait(task, poll=0.01, timeout=5)
                    assert done.succeeded == (job.route == "guard"), done
                    task_id = done.task_id
                diary.ids[job.route].append(task_id)
            for hour in EVALUATIONS:
                advance_to(world, at(day, hour))
                snap = take_snapshot(plain, world.ledger, limiter=limiter)
                moment = world.clock()
                diary.snapshots[moment] = {p.name: p.units_at_risk for p in snap.packs}
                diary.alerts[moment] = evaluate(world.ledger, moment)  # the stored snapshot's packs
    return diary


# ---------------------------------------------------------------------------------- the month


runner = CliRunner()


def cli_reconcile(
    world: Bill, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("KLING_COST_LEDGER", ledger_url)
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    result = runner.invoke(
        app,
        [
            "reconcile",
            "--base-url",
            world.url,
            "--since",
            MONTH.isoformat(),
            "--until",
            (MONTH + timedelta(days=DAYS)).isoformat(),
            "--json",
        ],
    )
    return result.exit_code, json.loads(result.stdout)


def test_a_month_of_traffic_packs_alerts_and_the_bill(
    month: Bill, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, ledger = month, month.ledger
    ledger.set_budget(SCOPE, LIMIT, "day")
    diary = live_month(world)
    assert len(diary.ids["guard"]) == 3 * DAYS + 3 and len(diary.ids["fail"]) == 1
    assert len(diary.ids["bypass"]) == len(BYPASS_DAYS)
    assert all(seconds == 0 for seconds in diary.waited)  # evaluations are hours apart

    # --- the forecast alert: once, on the busy day's first evaluation, nowhere else.
    forecasts = {when: [a for a in alerts if a.kind == "forecast"] for when, alerts in diary.alerts.items()}
    assert [when for when, alerts in forecasts.items() if alerts] == [at(BUSY_DAY, 6)]
    (alert,) = forecasts[at(BUSY_DAY, 6)]
    spent = units_of("guard", at(BUSY_DAY, 0), at(BUSY_DAY, 6))
    assert spent == D(13)
    # 13 units in the 6 hours since midnight: 13 x 24 / 6 at the day's end; a normal day 5.5 x 4.
    assert alert.details["projected"] == "52.000" and alert.window_key == "2026-07-09"
    assert (alert.used, alert.limit) == (spent, LIMIT)
    assert units_of("guard", at(1, 0), at(1, 6)) * 4 == D(22) < LIMIT
    assert [a.window_key for a in ledger.alerts() if a.kind == "forecast"] == ["2026-07-09"]

    # --- the pack-expiry alert: at the first evaluation at or after 7 days before the expiry.
    warn_from = PACK_A_EXPIRES - timedelta(days=7)  # 2026-07-13 12:00
    first = min(when for when in diary.alerts if when >= warn_from)
    assert first == at(13, 18)
    expiries = {when: [a for a in alerts if a.kind == "pack-expiry"] for when, alerts in diary.alerts.items()}
    assert [when for when, alerts in expiries.items() if alerts] == [first]
    (warning,) = expiries[first]
    # Independently: pack A paid for everything until then (it expires first); the ledger's
    # burn is the guarded units of the last 7 days, spent from now to the expiry.
    remaining = PACK_A_TOTAL - billed(MONTH, first)
    weekly = units_of("guard", first - timedelta(days=7), first)
    until_expiry = D((PACK_A_EXPIRES - first) // timedelta(milliseconds=1)) / D(86_400_000)
    at_risk = (remaining - weekly / 7 * until_expiry).quantize(D("0.001"), ROUND_CEILING)
    assert (remaining, weekly, until_expiry) == (D(63), D(46), D("6.75"))
    assert at_risk == D("18.643")
    assert D(warning.details["units_at_risk"]) == at_risk and D(warning.details["remaining"]) == remaining
    assert warning.window_key == "sim-pack-4" and warning.details["pack_name"] == "video pack A"
    assert diary.snapshots[first]["video pack A"] == at_risk
    assert [a.window_key for a in ledger.alerts() if a.kind == "pack-expiry"] == ["sim-pack-4"]

    # --- the expiry really loses pack A's units; later tasks are paid by pack B.
    packs = {p.name: p for p in world.sim.state.all_packs}
    now = world.now_ms()
    lost = PACK_A_TOTAL - billed(MONTH, PACK_A_EXPIRES)
    assert lost == D("24.5")
    assert packs["video pack A"].status(now) == "expired" and packs["video pack A"].remaining == lost
    rows = world.sim.state.accounts.charges
    assert all(r.funding == "unit" for r in rows)
    assert {r.package_name for r in rows if r.deduction_time < ms(PACK_A_EXPIRES)} == {"video pack A"}
    assert {r.package_name for r in rows if r.deduction_time >= ms(PACK_A_EXPIRES)} == {"video pack B"}
    assert packs["video pack B"].remaining == PACK_B_TOTAL - billed(
        PACK_A_EXPIRES, MONTH + timedelta(days=DAYS)
    )
    snap = load_snapshot(ledger)
    assert snap is not None
    (stored_a,) = [p for p in snap.packs if p.name == "video pack A"]
    assert (stored_a.status, stored_a.units_lost, stored_a.units_at_risk) == ("expired", lost, D(0))

    # --- reconcile the month: exactly the bypass tasks, and nothing else.
    kling_total = sum((r.amount for r in rows), D(0))
    assert kling_total == billed(MONTH, MONTH + timedelta(days=DAYS)) == D("187.5")
    assert ledger.totals()["units"]["charged"] == units_of("guard", MONTH, MONTH + timedelta(days=DAYS))
    advance_to(world, MONTH + timedelta(days=DAYS, minutes=30))
    code, data = cli_reconcile(world, ledger_url, monkeypatch)
    assert code == 1 and {d["task_id"] for d in data["differences"]} == set(diary.ids["bypass"])
    with world.kling() as client:
        found = reconcile(ledger, client, since=MONTH)
    assert found.counts == {
        "matched": len(diary.ids["guard"]),
        "amount_differs": 0,
        "unknown_to_ledger": len(BYPASS_DAYS),
        "not_billed": 0,
        "other_unit": 0,
    }
    assert {d.task_id for d in found.differences} == set(diary.ids["bypass"])
    assert all(d.category == "unknown_to_ledger" for d in found.differences)
    assert diary.ids["fail"][0] not in {d.task_id for d in found.differences}
    assert {d.task_id: d.kling_amount for d in found.differences} == {
        task_id: PRICE[BYPASS_DAYS[day]]
        for task_id, day in zip(diary.ids["bypass"], BYPASS_DAYS, strict=True)
    }
    assert {d.api_key_name for d in found.differences} == {AK}  # legacy callers: named by access key
    assert found.by_pack["video"] == {"ledger": kling_total - D("9.5"), "kling": kling_total}

    # --- fix: the ledger matches Kling's bill to the unit, and a new run is clean.
    with world.kling() as client:
        fixed = reconcile(ledger, client, since=MONTH, fix=True)
        again = reconcile(ledger, client, since=MONTH)
    assert sorted(fixed.fixed) == sorted(diary.ids["bypass"]) and fixed.clean
    assert again.clean and again.differences == () and again.counts["matched"] == len(rows)
    assert ledger.totals()["units"]["charged"] == kling_total
    assert again.by_pack["video"] == {"ledger": kling_total, "kling": kling_total}
    code, data = cli_reconcile(world, ledger_url, monkeypatch)
    assert code == 0 and data["clean"] is True

    # --- the late charges count at Kling's deduction time, not when --fix recorded them: the
    # pack burn of the last 7 days has none of them (the last bypass task was on the 23rd).
    late = [c for c in ledger.charges() if c.metadata.get("source") == "reconcile"]
    assert {c.task_id for c in late} == set(diary.ids["bypass"]), [(c.created_at, c.kind) for c in late]
    world.advance(60)
    with world.kling() as client:
        after = take_snapshot(
            client,
            ledger,
            limiter=CostsLimiter(BillStore(ledger), clock=world.sim_clock.now, sleep=world.advance),
        )
    week = world.clock() - timedelta(days=7)
    assert after.burn_per_day["video"] == (billed(week, world.clock()) / 7).quantize(D("0.001")) == D("5.5")
