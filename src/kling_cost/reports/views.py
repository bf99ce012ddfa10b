"""Ready-made views shared by the CLI and the dashboard: daily usage against a limit, budgets, overview."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import DEFAULT_UNIT, Usage, validate_scope
from ..errors import ValidationError
from ..ledger import Charge, Ledger
from ..money import exact
from . import _time
from .aggregate import Report, ReportRow, report, sort_units

__all__ = ["DailyUsage", "budget_status", "daily_usage", "latest_charges", "overview"]


@dataclass(frozen=True)
class DailyUsage:
    """One row per local day and unit (days without charges included), and the scope's daily
    limit in its ``unit``.

    ``units``: the units shown, each a full series of days: those of the period's charges and
    the daily budget's (``units`` when there are neither). Amounts of different units are never
    added: a ledger with charges in units and in credits has two rows per day.
    """

    scope: str
    tz: str
    limit: Decimal | None
    unit: str | None
    """What ``limit`` counts (None without a daily budget)."""
    units: tuple[str, ...]
    days: tuple[ReportRow, ...]

    def series(self, unit: str) -> tuple[ReportRow, ...]:
        """The days of one unit, oldest first."""
        return tuple(r for r in self.days if r.unit == unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "tz": self.tz,
            "limit": None if self.limit is None else str(self.limit),
            "unit": self.unit,
            "units": list(self.units),
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
    """Usage per local day and unit over the last ``days`` days (today included), and the
    daily limit with its unit."""
    if days < 1 or days > 3660:
        raise ValidationError(f"days must be between 1 and 3660, not {days}")
    target = validate_scope(scope or "account")
    moment = now or ledger.clock()
    rep = report(ledger, ("day",), since=f"{days}d", scope=target, tz=tz, now=moment)
    found = {(r.key["day"], r.unit): r for r in rep.rows}
    budget = ledger.get_budget(target, "day")
    shown = {*rep.units, *(() if budget is None else (budget.unit,))}
    units = sort_units(shown) or (DEFAULT_UNIT,)
    first = _time.today(tz, moment) - timedelta(days=days - 1)
    rows = []
    for i in range(days):
        key = (first + timedelta(days=i)).isoformat()
        for u in units:
            rows.append(found.get((key, u)) or ReportRow.of({"day": key}, [0] * 9, u))
    return DailyUsage(
        target,
        tz,
        None if budget is None else budget.limit,
        None if budget is None else budget.unit,
        tuple(units),
        tuple(rows),
    )


@exact
def budget_status(usage: Usage) -> dict[str, Any]:
    """A budget's gauge: limit, used, reserved, remaining (all in the budget's ``unit``),
    percent used and its threshold marks."""
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
    return ledger.queries.recent_charges(limit=limit, scope=None if scope is None else validate_scope(scope))


def overview(
    ledger: Ledger, *, days: int = 30, tz: str = "UTC", now: datetime | None = None
) -> dict[str, Any]:
    """Every budget's gauge, the daily usage of the last ``days`` days against the account's
    daily limit, and the totals of that period, one per unit (JSON-ready: amounts as strings,
    each with its ``unit``)."""
    moment = now or ledger.clock()
    daily = daily_usage(ledger, days, tz=tz, now=moment)
    period: Report = report(ledger, (), since=f"{days}d", tz=tz, now=moment)
    return {
        "generated_at": moment.isoformat(),
        "tz": tz,
        "days": days,
        "budgets": [budget_status(u) for u in ledger.usages(at=moment)],
        "daily": daily.to_dict(),
        "units": list(period.units),
        "totals": [t.to_dict() for t in period.totals],
        "since": None if period.since is None else period.since.isoformat(),
    }
