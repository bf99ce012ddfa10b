"""What a person looking at spend wants first: today against yesterday, the costliest prompts,
the budget closest to its limit (the dashboard's "At a glance", ``/api/glance``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import DEFAULT_UNIT, Usage
from ..errors import ValidationError
from ..ledger import Ledger
from ..ledger.models import PromptCost
from ..money import exact, money_context
from . import _time
from .aggregate import report, sort_units
from .views import budget_status

__all__ = ["DaySpend", "Glance", "closest_budget", "glance"]


@dataclass(frozen=True)
class DaySpend:
    """What was charged today so far and all of yesterday (local days), in one ``unit``."""

    unit: str
    today: Decimal
    yesterday: Decimal
    today_charges: int
    yesterday_charges: int

    @property
    def change(self) -> Decimal:
        """Today minus yesterday (negative: less than yesterday so far)."""
        with money_context():
            return self.today - self.yesterday

    @property
    def change_pct(self) -> Decimal | None:
        """The change as a percentage of yesterday (one decimal), None when yesterday was 0."""
        if not self.yesterday:
            return None
        with money_context():
            return (self.change * 100 / self.yesterday).quantize(Decimal("0.1"))

    def to_dict(self) -> dict[str, Any]:
        pct = self.change_pct
        return {
            "unit": self.unit,
            "today": str(self.today),
            "yesterday": str(self.yesterday),
            "change": str(self.change),
            "change_pct": None if pct is None else str(pct),
            "today_charges": self.today_charges,
            "yesterday_charges": self.yesterday_charges,
        }


@dataclass(frozen=True)
class Glance:
    """Today against yesterday (one entry per unit), the costliest prompts of the last ``days``
    days (per unit, costliest first) and the budget closest to its limit (None without budgets)."""

    generated_at: datetime
    tz: str
    days: int
    today: date
    spend: tuple[DaySpend, ...]
    top_prompts: tuple[PromptCost, ...]
    closest: Usage | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "tz": self.tz,
            "days": self.days,
            "today": self.today.isoformat(),
            "yesterday": (self.today - timedelta(days=1)).isoformat(),
            "spend": [s.to_dict() for s in self.spend],
            "top_prompts": [p.to_dict() for p in self.top_prompts],
            "closest_budget": None if self.closest is None else budget_status(self.closest),
        }


@exact
def closest_budget(usages: Sequence[Usage]) -> Usage | None:
    """The budget whose window is the most used, ``(used + reserved) / limit`` (limits are
    above 0), the first of equals in the order given; None for no budget."""
    best: tuple[Decimal, Usage] | None = None
    for u in usages:
        ratio = (u.used + u.reserved) / u.limit
        if best is None or ratio > best[0]:
            best = (ratio, u)
    return None if best is None else best[1]


def glance(
    ledger: Ledger, *, days: int = 30, tz: str = "UTC", now: datetime | None = None, top: int = 5
) -> Glance:
    """The dashboard's "At a glance" over ``ledger`` at ``now`` (default: the ledger's clock).

    Today and yesterday are local days of ``tz`` (today so far against the whole of yesterday),
    read from the rollup; the costliest prompts are those of the last ``days`` days (today
    included), ``top`` per unit; the closest budget counts what is reserved as used.
    """
    if days < 1 or days > 3660:
        raise ValidationError(f"days must be between 1 and 3660, not {days}")
    moment = now or ledger.clock()
    today = _time.today(tz, moment)
    yesterday = today - timedelta(days=1)
    rep = report(ledger, ("day",), since=yesterday, until=today, tz=tz, now=moment)
    found = {(r.key["day"], r.unit): r for r in rep.rows}
    usages = ledger.usages(at=moment)
    units = sort_units({*rep.units, *(u.unit for u in usages)}) or (DEFAULT_UNIT,)
    spend = []
    for unit in units:
        now_row, then_row = found.get((today.isoformat(), unit)), found.get((yesterday.isoformat(), unit))
        spend.append(
            DaySpend(
                unit,
                Decimal("0.000") if now_row is None else now_row.actual,
                Decimal("0.000") if then_row is None else then_row.actual,
                0 if now_row is None else now_row.charges,
                0 if then_row is None else then_row.charges,
            )
        )
    since = _time.parse_since(f"{days}d", tz, moment)
    prompts = ledger.prompt_costs(since=since, until=_time.parse_until(today, tz), limit=top)
    return Glance(moment, tz, days, today, tuple(spend), tuple(prompts), closest_budget(usages))
