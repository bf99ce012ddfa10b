"""Forecasts: the projection's rules, and the forecast and pack-expiry alerts, on both backends."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kling_cost.alerts import Deliverer
from kling_cost.alerts.message import AlertMessage
from kling_cost.bill.forecast import Projection, evaluate, forecast, pack_expiry_alerts
from kling_cost.ledger import Ledger
from kling_cost.ledger.models import AlertRecord
from tests.helpers import FakeClock

D = Decimal
DAY = datetime(2026, 6, 15, tzinfo=UTC)
SCOPE = "project:film"
# Charged at hh:30 of each hour: 5 units an hour until 04:30, then 10 an hour.
SCHEDULE = [D(5), D(5), D(5), D(5)] + [D(10)] * 20


def spend(ledger: Ledger, clock: FakeClock, day: datetime, hour: int) -> None:
    """The charge of ``hour`` (at hh:30), reserved and committed by the ledger."""
    clock.set(day + timedelta(hours=hour, minutes=30))
    held = ledger.reserve(SCHEDULE[hour], [SCOPE])
    ledger.commit(held, SCHEDULE[hour])


def projection(ledger: Ledger, at: datetime) -> Projection:
    (found,) = [p for p in forecast(ledger, at) if p.budget.scope == SCOPE]
    return found


def forecasts(ledger: Ledger) -> list[AlertRecord]:
    return [a for a in ledger.alerts() if a.kind == "forecast"]


def run_day(ledger: Ledger, clock: FakeClock, day: datetime, hours: int) -> dict[int, list[AlertRecord]]:
    """Spend hour by hour and evaluate on each full hour; what each evaluation wrote."""
    fired = {}
    for hour in range(hours):
        spend(ledger, clock, day, hour)
        clock.set(day + timedelta(hours=hour + 1))
        fired[hour + 1] = [a for a in evaluate(ledger) if a.kind == "forecast"]
    return fired


def test_no_projection_before_enough_data(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget(SCOPE, 130)
    clock.set(DAY + timedelta(hours=1))
    early = projection(ledger, clock())
    assert early.projected is None and early.rate_per_hour is None and early.runs_out_at is None
    assert early.reason is not None and "1 h 00 min of the day elapsed" in early.reason
    for hour in range(2):
        spend(ledger, clock, DAY, hour)
    # 2 h 30 min elapsed (more than 10 % of the day), but only two charges.
    few = projection(ledger, DAY + timedelta(hours=2, minutes=30))
    assert few.projected is None and few.events == 2
    assert few.reason is not None and "2 charge(s) or hold(s)" in few.reason and "needs 3" in few.reason
    assert few.to_dict()["projected"] is None


def test_projection_is_exact(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget(SCOPE, 130)
    for hour in range(5):
        spend(ledger, clock, DAY, hour)
    p = projection(ledger, DAY + timedelta(hours=5))
    # 30 units over the 5 hours of the window so far: 6 an hour, 19 hours left.
    assert (p.used, p.reserved, p.spent, p.events) == (D("30.000"), D("0.000"), D("30.000"), 5)
    assert p.rate_per_hour == D("6.000")
    assert p.projected == D("144.000") and p.over
    # 100 units left at 6 an hour: 16 h 40 min after 05:00.
    assert p.runs_out_at == DAY + timedelta(hours=21, minutes=40)
    assert p.since == DAY and p.horizon == DAY + timedelta(days=1)
    # An open reservation counts both in the level and in the rate.
    clock.set(DAY + timedelta(hours=4, minutes=45))
    ledger.reserve(D(6), [SCOPE], ttl=timedelta(hours=6))
    held = projection(ledger, DAY + timedelta(hours=5))
    assert (held.reserved, held.spent, held.rate_per_hour) == (D("6.000"), D("36.000"), D("7.200"))
    assert held.projected == D("172.800")  # 36 + 7.2 x 19
    # Rounded once, to the ledger's 0.001: 46 units (the hold too) over 6 hours, 18 left.
    spend(ledger, clock, DAY, 5)
    later = projection(ledger, DAY + timedelta(hours=6))
    assert later.rate_per_hour == D("7.667")  # 46 / 6
    assert later.projected == D("184.000")  # 46 + 46 / 6 x 18, exactly


def test_a_projection_within_the_limit_has_no_run_out_time(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget(SCOPE, 500)
    for hour in range(3):
        spend(ledger, clock, DAY, hour)
    p = projection(ledger, DAY + timedelta(hours=3))
    assert p.projected == D("120.000") and not p.over and p.runs_out_at is None


def test_forecast_alert_fires_once_per_window(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget(SCOPE, 130, thresholds=["1"])
    fired = run_day(ledger, clock, DAY, 8)
    # 03:00 and 04:00 project 120; 05:00 projects 144: the first pass over 130.
    assert [hour for hour, alerts in fired.items() if alerts] == [5]
    (alert,) = fired[5]
    assert (alert.kind, alert.threshold, alert.window_key) == ("forecast", "forecast", "2026-06-15")
    assert (alert.used, alert.limit) == (D("30.000"), D("130.000"))
    assert alert.details["projected"] == "144.000" and alert.details["rate_per_hour"] == "6.000"
    assert alert.message == (
        "Budget project:film day (2026-06-15) will reach 144 of 130 units by 2026-06-16 00:00 "
        "(runs out at 21:40; 6 units/h recently; times UTC)"
    )
    assert len(forecasts(ledger)) == 1
    # The next day passes again: a new alert for the new window; the old one was cleared.
    fired = run_day(ledger, clock, DAY + timedelta(days=1), 6)
    assert [hour for hour, alerts in fired.items() if alerts] == [5]
    rows = {a.window_key: a for a in forecasts(ledger)}
    assert set(rows) == {"2026-06-15", "2026-06-16"}
    assert rows["2026-06-15"].cleared_at is not None and rows["2026-06-16"].cleared_at is None


def test_forecast_alert_cleared_when_the_limit_rises(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget(SCOPE, 130, thresholds=["1"])
    run_day(ledger, clock, DAY, 5)
    (alert,) = forecasts(ledger)
    assert alert.cleared_at is None
    ledger.set_budget(SCOPE, 200, thresholds=["1"])
    (alert,) = forecasts(ledger)
    assert alert.cleared_at == clock() and alert.resolved_status == "pending"
    assert evaluate(ledger) == []  # 144 is within 200
    # A limit raised but still under the projection: cleared, then fired again against it.
    ledger.set_budget(SCOPE, 140, thresholds=["1"])
    (again,) = evaluate(ledger)
    assert again.limit == D("140.000") and again.cleared_at is None and again.id == alert.id


def test_forecast_alert_delivered_through_a_real_sink(
    ledger: Ledger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.set_budget(SCOPE, 130, thresholds=["1"])
    run_day(ledger, clock, DAY, 5)
    seen: list[AlertMessage] = []
    with (
        caplog.at_level(logging.WARNING, logger="kling_cost.alerts"),
        Deliverer(ledger, ["log://", seen.append]) as deliverer,
    ):
        report = deliverer.deliver_pending()
        assert report.delivered == 1 and not report.errors
        (message,) = seen
        assert message.kind == "forecast"
        assert (
            message.title == "project:film day budget: heading for 144 / 130 units by the end of 2026-06-15"
        )
        body = message.body()
        assert "Projected:  144 units by 2026-06-16T00:00:00+00:00 at 6 units per hour" in body
        assert "Runs out:   2026-06-15T21:40:00+00:00" in body
        assert "will reach 144 of 130 units" in caplog.text
        # The window rolls over: the next pass clears it and says why.
        clock.set(DAY + timedelta(days=1, minutes=5))
        report = deliverer.deliver_pending()
        assert report.cleared == 1 and report.resolved == 1
    assert seen[-1].event == "resolved"
    assert seen[-1].text == (
        "Resolved: the forecast alert of the project:film day budget (2026-06-15): "
        "the day window 2026-06-15 ended"
    )


@dataclass(frozen=True)
class Pack:
    pack_type: str
    name: str
    id: str
    remaining: Decimal
    invalid_time: datetime
    units_at_risk: Decimal


def test_pack_expiry_alert_fires_on_the_right_day_once(
    ledger: Ledger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    expires = datetime(2026, 6, 25, 10, 0, tzinfo=UTC)
    pack = Pack("video", "Video 1000", "pk-1", D(400), expires, D(258))
    safe = Pack("video", "Video 500", "pk-2", D(100), expires, D(0))
    fired = {}
    for day in range(15, 27):
        clock.set(datetime(2026, 6, day, 12, 0, tzinfo=UTC))
        fired[day] = evaluate(ledger, packs=[pack, safe])
    # Seven days before 06-25 10:00 is 06-18 10:00: the 12:00 evaluation of the 18th fires.
    assert [day for day, alerts in fired.items() if alerts] == [18]
    (alert,) = fired[18]
    assert (alert.kind, alert.threshold, alert.budget_id, alert.window_key) == (
        "pack-expiry",
        "pack-expiry",
        0,
        "pk-1",
    )
    assert alert.details["units_at_risk"] == "258.000" and alert.details["usd_at_risk"] == "36.12"
    assert alert.message == (
        "Resource pack Video 1000 (video, pk-1) expires on 2026-06-25 10:00 UTC, in 6 day(s), "
        "with 258 of its 400 remaining units unused at the current burn rate (worth USD 36.12)"
    )
    seen: list[AlertMessage] = []
    with Deliverer(ledger, [seen.append]) as deliverer:
        clock.set(datetime(2026, 6, 19, tzinfo=UTC))
        assert deliverer.deliver_pending().delivered == 1
        assert seen[0].title == "resource pack Video 1000 expires 2026-06-25 with 258 units at risk"
        assert "At risk:    258 units will not be used at the current burn rate" in seen[0].body()
        assert "Value:      USD 36.12" in seen[0].body()
        # Still open after the day passes (a pack alert is not a budget window's) ...
        clock.set(datetime(2026, 6, 24, tzinfo=UTC))
        assert deliverer.deliver_pending().cleared == 0
        # ... and cleared once the pack has expired.
        clock.set(expires + timedelta(minutes=1))
        report = deliverer.deliver_pending()
        assert report.cleared == 1 and report.resolved == 1
    assert (
        seen[-1].text == "Resolved: the expiry alert of resource pack Video 1000 (pk-1): the pack has expired"
    )


def test_pack_alert_cleared_when_its_units_are_no_longer_at_risk(ledger: Ledger, clock: FakeClock) -> None:
    expires = datetime(2026, 6, 20, tzinfo=UTC)
    (alert,) = pack_expiry_alerts(ledger, [Pack("image", "Img", "pk-9", D(50), expires, D(20))], days=10)
    assert alert.details["usd_at_risk"] == "0.0700"
    assert pack_expiry_alerts(ledger, [Pack("image", "Img", "pk-9", D(10), expires, D(0))], days=10) == []
    (row,) = ledger.alerts()
    assert row.cleared_at is not None and row.resolved_status == "pending"
    with pytest.raises(Exception, match="days must be a whole number"):
        pack_expiry_alerts(ledger, [], days=-1)


def test_lifetime_budget_projects_a_week_ahead(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget(SCOPE, 1000, "lifetime")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for day in range(3):  # 20 units a day, for three days
        clock.set(start + timedelta(days=day))
        ledger.commit(ledger.reserve(D(20), [SCOPE]), D(20))
    young = projection(ledger, start + timedelta(hours=20))
    assert young.projected is None and young.reason is not None and "24 h" in young.reason
    p = projection(ledger, start + timedelta(days=3))
    assert p.since == start and p.rate_per_hour == D("0.833")  # 60 units in 72 hours
    assert p.projected == D("200.000")  # 60 + 60 / 3 x 7
    assert p.runs_out_at == start + timedelta(days=3 + 47)  # 940 units at 20 a day


def test_a_late_charge_counts_when_kling_deducted_it_not_when_fix_recorded_it(
    ledger: Ledger, clock: FakeClock
) -> None:
    """``reconcile --fix`` records a month's bypass traffic at once: it lifts the level of the
    window it lands in, but is no burst of spending (the rate), nor of a pack's burn."""
    from kling_cost.bill.packs import burn_per_type

    ledger.set_budget("account", 100, thresholds=["1"])
    for hour in range(1, 4):
        clock.set(DAY + timedelta(hours=hour, minutes=30))
        ledger.commit(ledger.reserve(D(5), ["account"], metadata={"kind": "text2video"}), D(5))
    clock.set(DAY + timedelta(hours=5))
    ledger.charge(
        "30",
        ["account"],
        idempotency_key="kling-bill:t-1",
        task_id="t-1",
        metadata={
            "kind": "text-to-video",
            "source": "reconcile",
            "late": True,
            "deduction_time": (DAY - timedelta(days=9)).isoformat(),
        },
    )
    clock.set(DAY + timedelta(hours=6))
    (p,) = forecast(ledger)
    # 15 units spent in the 6 hours (the late 30 was spent 9 days ago): 45 + 15 x 18 / 6.
    assert (p.used, p.spent, p.events) == (D("45.000"), D("15.000"), 3)
    assert p.projected == D("90.000") and not p.over
    assert evaluate(ledger) == []
    week = burn_per_type(ledger, clock() - timedelta(days=7), clock())
    assert week["video"] == D(15)
    assert burn_per_type(ledger, DAY - timedelta(days=10), clock())["video"] == D(45)
