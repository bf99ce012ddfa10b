"""Ready-made views shared by the CLI and the dashboard: daily usage against a limit, budgets, overview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import Usage, validate_scope
from ..errors import ValidationError
from ..ledger import Charge, Ledger
from ..ledger.rollup import recent_charges
from ..money import exact
from . import _time
from .aggregate import Report, ReportRow, report

__all__ = ["DailyUsage", "budget_status", "daily_usage", "latest_charges", "overview"]


@dataclass(frozen=True)
class DailyUsage:
    """One row per local day (days without charges included) and the scope's daily limit."""

    scope: str
    tz: str
    limit: Decimal | None
    days: tuple[ReportRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "tz": self.tz,
            "limit": None if self.limit is None else str(self.limit),
            "days": [r.to_dict() for r in self.days],
        }


def daily_usage(
    ledger: Ledger,
    days: int = 30,
    *,
    scope: str | None = None,
    tz: str = "UTC",
    now: datetime | None = None,
) -> DailyUsage:
    """Usage per local day over the last ``days`` days (today included), and the daily limit."""
    if days < 1 or days > 3660:
        raise ValidationError(f"days must be between 1 and 3660, not {days}")
    target = validate_scope(scope or "account")
    moment = now or ledger.clock()
    rep = report(ledger, ("day",), since=f"{days}d", scope=target, tz=tz, now=moment)
    found = {r.key["day"]: r for r in rep.rows}
    first = _time.today(tz, moment) - timedelta(days=days - 1)
    rows = []
    for i in range(days):
        key = (first + timedelta(days=i)).isoformat()
        rows.append(found.get(key) or ReportRow.of({"day": key}, [0] * 9))
    budget = ledger.get_budget(target, "day")
    return DailyUsage(target, tz, None if budget is None else budget.limit, tuple(rows))


@exact
def budget_status(usage: Usage) -> dict[str, Any]:
    """A budget's gauge: limit, used, reserved, remaining, percent used and its threshold marks."""
    limit = usage.limit
    pct = None if not limit else ((usage.used + usage.reserved) * 100 / limit).quantize(Decimal("0.1"))
    return {
        **usage.to_dict(),
        "id": usage.budget.id,
        "thresholds": [str(t) for t in usage.budget.thresholds],
        "marks": [str((limit * t).quantize(Decimal("0.001"))) for t in usage.budget.thresholds],
        "percent": None if pct is None else str(pct),
    }


def latest_charges(ledger: Ledger, limit: int = 50, *, scope: str | None = None) -> list[Charge]:
    """The latest charges, newest first."""
    if limit < 1 or limit > 1000:
        raise ValidationError(f"limit must be between 1 and 1000, not {limit}")
    return recent_charges(ledger, limit=limit, scope=None if scope is None else validate_scope(scope))


def overview(
    ledger: Ledger, *, days: int = 30, tz: str = "UTC", now: datetime | None = None
) -> dict[str, Any]:
    """Every budget's gauge, the daily usage of the last ``days`` days against the account's
    daily limit, and the totals of that period (JSON-ready: amounts as strings)."""
    moment = now or ledger.clock()
    daily = daily_usage(ledger, days, tz=tz, now=moment)
    period: Report = report(ledger, (), since=f"{days}d", tz=tz, now=moment)
    return {
        "generated_at": moment.isoformat(),
        "tz": tz,
        "days": days,
        "budgets": [budget_status(u) for u in ledger.usages(at=moment)],
        "daily": daily.to_dict(),
        "totals": period.total.to_dict(),
        "since": None if period.since is None else period.since.isoformat(),
    }
