from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kling_cost import BudgetExceeded
from kling_cost.budgets import window_at
from kling_cost.ledger import Ledger
from tests.helpers import FakeClock

NY = ZoneInfo("America/New_York")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY).astimezone(UTC)


@pytest.mark.parametrize(
    ("day", "hours"),
    [((2026, 3, 8), 23), ((2026, 11, 1), 25), ((2026, 6, 15), 24)],
)
def test_new_york_days_follow_dst(day: tuple[int, int, int], hours: int) -> None:
    w = window_at("day", "America/New_York", local(*day, 12))
    assert w.start == local(*day, 0) and w.end is not None and w.start is not None
    assert w.end - w.start == timedelta(hours=hours)


@pytest.mark.parametrize(("day", "hours"), [((2026, 3, 8), 23), ((2026, 11, 1), 25)])
def test_budget_rolls_over_at_local_midnight_across_dst(
    ledger: Ledger, clock: FakeClock, day: tuple[int, int, int], hours: int
) -> None:
    ledger.set_budget("project:ny", 10, "day", tz="America/New_York")
    clock.set(local(*day, 0, 30))
    ledger.commit(ledger.reserve(10, ["project:ny"]))
    clock.set(local(*day, 0, 30) + timedelta(hours=hours - 1, minutes=29))  # 23:59 local, same day
    with pytest.raises(BudgetExceeded):
        ledger.reserve(1, ["project:ny"])
    clock.advance(minutes=1)  # local midnight
    assert (
        ledger.usage("project:ny").window.key == datetime(*day).date().__add__(timedelta(days=1)).isoformat()
    )
    assert ledger.reserve(10, ["project:ny"]).status == "reserved"


def test_reservation_before_midnight_counts_for_the_old_day(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("account", 100, "day", tz="America/New_York")
    clock.set(local(2026, 7, 4, 23, 59))
    r = ledger.reserve(40)
    clock.advance(minutes=2)
    ledger.commit(r, 35)
    assert ledger.usage("account", at=local(2026, 7, 4, 12)).used == 35
    today = ledger.usage("account")
    assert today.window.key == "2026-07-05" and today.used == 0 and today.remaining == 100


def test_week_and_month_boundaries(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("account", 10, "week", tz="UTC")
    ledger.set_budget("project:m", 10, "month", tz="Asia/Tokyo")
    clock.set(datetime(2026, 11, 29, 23, 59, tzinfo=UTC))  # Sunday
    ledger.commit(ledger.reserve(10, ["project:m"]))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(1)
    clock.set(datetime(2026, 11, 30, 0, 0, tzinfo=UTC))  # Monday: a new week
    assert ledger.usage("account", "week").window.key == "2026-W49"
    assert ledger.usage("project:m").window.key == "2026-11"  # 09:00 on Nov 30th in Tokyo
    clock.set(datetime(2026, 11, 30, 15, 0, tzinfo=UTC))  # midnight, December 1st, in Tokyo
    assert ledger.usage("account", "week").window.key == "2026-W49"
    assert ledger.usage("project:m").window.key == "2026-12"
    assert ledger.reserve(10, ["project:m"]).status == "reserved"
    w = window_at("month", "Asia/Tokyo", datetime(2026, 12, 31, 14, 59, tzinfo=UTC))
    assert w.key == "2026-12" and w.end == datetime(2026, 12, 31, 15, 0, tzinfo=UTC)


def test_lifetime_never_rolls(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("key:trial", 5, "lifetime")
    ledger.commit(ledger.reserve(5, ["key:trial"]))
    clock.advance(days=400)
    with pytest.raises(BudgetExceeded):
        ledger.reserve(1, ["key:trial"])
