"""Where every budget is heading, and the two alerts that say so before it is too late.

**The projection** of a budget at instant ``now`` (the ledger's clock):

    projected = used + reserved + rate x time left

where ``used + reserved`` is the budget's current window as the ledger holds it, the time left
runs to the window's end (lifetime budgets: to a horizon of 7 days ahead), and the **rate** is
what was spent recently: the charges (Kling's actuals) and the open reservations of the
budget's scope and unit made in the *observed span*, divided by the span's length. A late
charge ``reconcile --fix`` recorded was made when Kling deducted it (its ``deduction_time``),
not when the fix recorded it (it counts in ``used`` of the window it was recorded in, like every
charge, but is no sign of the recent pace).

* day, week and month budgets observe ``[max(window start, now - 24 h), now)``: the whole
  window so far for a day, the last 24 hours of a longer window (its recent pace, not its
  average since the 1st);
* lifetime budgets observe the last 7 days, or since the scope's first charge when that is
  more recent.

**Enough data** (before that, no projection and no forecast alert, only the reason):

* at least 3 spending events (a charge Kling billed above 0, or an open reservation) in the
  observed span, and
* day, week and month budgets: at least 10 % of the window elapsed (2 h 24 min of a day);
  lifetime budgets: a span of at least 24 hours.

**Runs out at**: the instant ``used + reserved + rate x t`` reaches the limit (``now`` when it
already has); None when that is after the window's end (lifetime: more than a year away) or
nothing is being spent.

Arithmetic is Decimal in the package's money context, times integer milliseconds: the
projection and the rate are rounded once, to the ledger's 0.001, half to even; the run-out
instant is rounded up to the next millisecond.

**Alerts**, written through the ledger's outbox
(:meth:`~kling_cost.ledger.outbox_store.OutboxStore.write_alert`) and delivered by the usual sinks:

* ``forecast`` (threshold ``forecast``): the projection passes the limit. Once per budget
  window (the outbox's unique key); cleared when the window ends or the limit is raised (a
  later evaluation may then fire it again against the new limit).
* ``pack-expiry`` (threshold ``pack-expiry``): a resource pack expires within ``days`` (7 by
  default) with units it will not use at the current burn rate. Once per pack (budget id 0, the
  pack id as window key); cleared when the pack has expired or its units are no longer at risk.

:func:`evaluate` does both; ``kling-cost forecast --alert`` and every pass of ``kling-cost
alerts deliver`` call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from ..budgets import Budget, Window
from ..errors import ValidationError
from ..ledger.outbox import KIND_FORECAST, KIND_PACK_EXPIRY, PACK_BUDGET_ID
from ..money import MONEY, QUANTUM, format_amount, format_quantity
from ..timestamps import from_ms, to_ms
from .packs import load_snapshot, spent_at

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..ledger.models import AlertRecord
    from .packs import PackStatus

__all__ = [
    "LIFETIME_HORIZON",
    "LIFETIME_LOOKBACK",
    "LOOKBACK",
    "MIN_ELAPSED",
    "MIN_EVENTS",
    "MIN_LIFETIME_SPAN",
    "PACK_EXPIRY_DAYS",
    "USD_PER_UNIT",
    "PackLike",
    "Projection",
    "evaluate",
    "forecast",
    "forecast_alerts",
    "forecast_message",
    "pack_expiry_alerts",
    "stored_packs",
]

MIN_EVENTS = 3
"""Spending events (charges above 0, open reservations) a projection needs in its span."""
MIN_ELAPSED = Decimal("0.1")
"""Fraction of a day, week or month window that must have elapsed before it is projected."""
LOOKBACK = timedelta(hours=24)
"""Longest span observed in a day, week or month window (its start, at the earliest)."""
LIFETIME_LOOKBACK = timedelta(days=7)
"""Span observed for a lifetime budget (its scope's first charge, at the earliest)."""
MIN_LIFETIME_SPAN = timedelta(hours=24)
"""Shortest span a lifetime budget is projected from."""
LIFETIME_HORIZON = timedelta(days=7)
"""How far ahead a lifetime budget (which has no window end) is projected."""
LIFETIME_RUNS_OUT = timedelta(days=366)
"""Farthest run-out instant reported for a lifetime budget."""
PACK_EXPIRY_DAYS = 7
"""Default warning time of a ``pack-expiry`` alert, in days."""
USD_PER_UNIT = {"video": Decimal("0.14"), "image": Decimal("0.0035"), "try-on": Decimal("0.07")}
"""Kling's price of one resource-pack unit by product type, in USD."""

_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Projection:
    """Where one budget's current window is heading (see the module's rules)."""

    budget: Budget
    window: Window
    used: Decimal
    reserved: Decimal
    at: datetime
    """The instant projected from (the ledger's clock)."""
    horizon: datetime | None
    """What is projected to: the window's end (lifetime: ``at`` + 7 days)."""
    since: datetime
    """Start of the observed span."""
    spent: Decimal
    """Charged or held in the observed span."""
    events: int
    """Spending events in the observed span (charges above 0, open reservations)."""
    rate_per_hour: Decimal | None
    """Spending per hour over the observed span; None without enough data."""
    projected: Decimal | None
    """Used + reserved at ``horizon`` at that rate; None without enough data."""
    runs_out_at: datetime | None
    """When used + reserved reaches the limit at that rate (``at`` if it already has); None
    without enough data, when that is after the horizon, or when nothing is spent."""
    reason: str | None = None
    """Why there is no projection (``not enough data yet: ...``)."""

    @property
    def limit(self) -> Decimal:
        return self.budget.limit

    @property
    def level(self) -> Decimal:
        """Used plus reserved now."""
        return MONEY.add(self.used, self.reserved)

    @property
    def over(self) -> bool:
        """The projection passes the limit."""
        return self.projected is not None and self.projected > self.budget.limit

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "budget_id": self.budget.id,
            "scope": self.budget.scope,
            "window": self.budget.window,
            "window_key": self.window.key,
            "tz": self.budget.tz,
            "unit": self.budget.unit,
            "limit": str(self.limit),
            "used": str(self.used),
            "reserved": str(self.reserved),
            "at": self.at.isoformat(),
            "horizon": iso(self.horizon),
            "since": self.since.isoformat(),
            "spent": str(self.spent),
            "events": self.events,
            "rate_per_hour": None if self.rate_per_hour is None else str(self.rate_per_hour),
            "projected": None if self.projected is None else str(self.projected),
            "runs_out_at": iso(self.runs_out_at),
            "over": self.over,
            "reason": self.reason,
        }


class PackLike(Protocol):
    """What a pack alert needs of a resource pack (``kling_cost.bill.packs``' snapshot rows).

    An optional ``usd_at_risk`` (Decimal) gives the value of the units at risk; otherwise it is
    priced from :data:`USD_PER_UNIT` by ``product_type`` (or ``pack_type``) when known."""

    @property
    def pack_type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def remaining(self) -> Decimal: ...
    @property
    def invalid_time(self) -> datetime: ...
    @property
    def units_at_risk(self) -> Decimal: ...


# -- the projection -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    at_ms: int
    amount: Decimal
    scopes: tuple[str, ...]
    unit: str


def forecast(ledger: Ledger, now: datetime | None = None) -> list[Projection]:
    """The projection of every budget of ``ledger`` at ``now`` (default: the ledger's clock)."""
    moment = _aware(now or ledger.clock())
    usages = ledger.usages(at=moment)
    if not usages:
        return []
    earliest = min(_span_start(u.budget, u.window, moment) for u in usages)
    events = _events(ledger, earliest, moment)
    firsts: dict[str, datetime | None] = {}
    out = []
    for u in usages:
        start = _span_start(u.budget, u.window, moment)
        if u.budget.window == "lifetime":
            if u.budget.scope not in firsts:
                first = ledger.charges(u.budget.scope, limit=1)
                firsts[u.budget.scope] = first[0].created_at if first else None
            found = firsts[u.budget.scope]
            start = start if found is None or found < start else found
        out.append(_project(u.budget, u.window, u.used, u.reserved, moment, start, events))
    return out


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValidationError("now must be timezone-aware")
    return at


def _span_start(budget: Budget, window: Window, now: datetime) -> datetime:
    if window.start is None:
        return now - LIFETIME_LOOKBACK
    return max(window.start, now - LOOKBACK)


def _events(ledger: Ledger, since: datetime, now: datetime) -> list[_Event]:
    until = to_ms(now)
    out = [
        _Event(to_ms(spent_at(c)), c.actual, c.scopes, c.unit)
        for c in ledger.charges(since=since, until=now)
        if c.status == "succeeded" and c.actual > 0
    ]
    out.extend(
        _Event(to_ms(r.created_at), r.amount, r.scopes, r.unit)
        for r in ledger.reservations("reserved", None, since=since)
        if to_ms(r.created_at) < until and r.amount > 0
    )
    return out


def _project(
    budget: Budget,
    window: Window,
    used: Decimal,
    reserved: Decimal,
    now: datetime,
    start: datetime,
    events: Iterable[_Event],
) -> Projection:
    now_ms, start_ms = to_ms(now), to_ms(start)
    mine = [
        e
        for e in events
        if e.unit == budget.unit and budget.scope in e.scopes and start_ms <= e.at_ms < now_ms
    ]
    spent = MONEY.add(sum((e.amount for e in mine), Decimal("0.000")), Decimal("0.000"))
    horizon = window.end if window.end is not None else now + LIFETIME_HORIZON
    reason = _not_enough(budget, window, now, start, len(mine))
    if reason is not None:
        return Projection(
            budget, window, used, reserved, now, horizon, start, spent, len(mine), None, None, None, reason
        )
    span_ms = now_ms - start_ms
    left_ms = to_ms(horizon) - now_ms
    level = MONEY.add(used, reserved)
    rate = _round(MONEY.divide(MONEY.multiply(spent, _HOUR_MS), span_ms))
    projected = _round(MONEY.add(level, MONEY.divide(MONEY.multiply(spent, left_ms), span_ms)))
    runs_out: datetime | None = None
    if level >= budget.limit:
        runs_out = now
    elif spent > 0:
        needed = MONEY.divide(MONEY.multiply(MONEY.subtract(budget.limit, level), span_ms), spent)
        at_ms = now_ms + int(needed.to_integral_value(ROUND_CEILING, MONEY))
        last = to_ms(window.end) if window.end is not None else to_ms(now + LIFETIME_RUNS_OUT)
        runs_out = from_ms(at_ms) if at_ms <= last else None
    return Projection(
        budget, window, used, reserved, now, horizon, start, spent, len(mine), rate, projected, runs_out
    )


def _round(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, ROUND_HALF_EVEN, MONEY)


def _not_enough(budget: Budget, window: Window, now: datetime, start: datetime, events: int) -> str | None:
    if window.start is not None and window.end is not None:
        length_ms = to_ms(window.end) - to_ms(window.start)
        need_ms = int(MONEY.multiply(length_ms, MIN_ELAPSED).to_integral_value(ROUND_CEILING, MONEY))
        elapsed_ms = to_ms(now) - to_ms(window.start)
        if elapsed_ms < need_ms:
            return (
                f"not enough data yet: {_duration(elapsed_ms)} of the {budget.window} elapsed, "
                f"a projection needs {_duration(need_ms)} (10%)"
            )
    elif now - start < MIN_LIFETIME_SPAN:
        return (
            f"not enough data yet: a lifetime budget is projected from at least 24 h of spending, "
            f"and its scope's first charge is {_duration(to_ms(now) - to_ms(start))} old"
        )
    if events < MIN_EVENTS:
        return (
            f"not enough data yet: {events} charge(s) or hold(s) since {start.isoformat()}, "
            f"a projection needs {MIN_EVENTS}"
        )
    return None


def _duration(ms: int) -> str:
    minutes = ms // 60_000
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


# -- the alerts ---------------------------------------------------------------------------------


def forecast_alerts(ledger: Ledger, projections: Sequence[Projection]) -> list[AlertRecord]:
    """Write a ``forecast`` alert for each projection over its limit; returns the alerts written
    now (a budget window that already has one is left as it is)."""
    out = []
    for p in projections:
        if not p.over or p.projected is None:
            continue
        written = ledger.outbox.write_alert(
            budget_id=p.budget.id,
            scope=p.budget.scope,
            window=p.budget.window,
            window_key=p.window.key,
            kind=KIND_FORECAST,
            threshold=KIND_FORECAST,
            used=p.used,
            reserved=p.reserved,
            limit=p.limit,
            message=forecast_message(p),
            details=_forecast_details(p),
            now=p.at,
        )
        if written is not None:
            out.append(written)
    return out


def forecast_message(p: Projection) -> str:
    """``Budget project:film day (2026-06-15) will reach 130 of 100 units by 2026-06-16 00:00
    (runs out at 15:20; 10 units/h recently; times UTC)``."""
    unit = p.budget.unit
    tz = p.budget.tz
    zone = ZoneInfo(tz)

    def when(at: datetime | None) -> str:
        if at is None:
            return "-"
        local, today = at.astimezone(zone), p.at.astimezone(zone)
        return local.strftime("%H:%M" if local.date() == today.date() else "%Y-%m-%d %H:%M")

    projected = p.projected if p.projected is not None else p.level
    rate = p.rate_per_hour if p.rate_per_hour is not None else Decimal(0)
    out = "already out" if p.runs_out_at == p.at else f"runs out at {when(p.runs_out_at)}"
    return (
        f"Budget {p.budget.scope} {p.budget.window} ({p.window.key}) will reach "
        f"{format_amount(projected)} of {format_quantity(p.limit, unit)} by {when(p.horizon)} "
        f"({out}; {format_amount(rate)} {unit}/h recently; times {tz})"
    )


def _forecast_details(p: Projection) -> dict[str, Any]:
    return {
        "trigger": "forecast",
        "unit": p.budget.unit,
        "tz": p.budget.tz,
        "level": str(p.level),
        "remaining": str(max(Decimal("0.000"), MONEY.subtract(p.limit, p.level))),
        "projected": str(p.projected),
        "rate_per_hour": str(p.rate_per_hour),
        "runs_out_at": None if p.runs_out_at is None else p.runs_out_at.isoformat(),
        "horizon": None if p.horizon is None else p.horizon.isoformat(),
        "since": p.since.isoformat(),
        "events": p.events,
        "spent": str(p.spent),
        "window_start": None if p.window.start is None else p.window.start.isoformat(),
        "window_end": None if p.window.end is None else p.window.end.isoformat(),
    }


def pack_expiry_alerts(
    ledger: Ledger, packs: Iterable[PackLike], now: datetime | None = None, days: int = PACK_EXPIRY_DAYS
) -> list[AlertRecord]:
    """A ``pack-expiry`` alert for each pack that expires within ``days`` of ``now`` with units
    at risk (``units_at_risk > 0``: units it will not use at the current burn rate); returns the
    alerts written now (once per pack). An open alert of a pack whose units are no longer at risk
    is cleared (one of an expired pack is cleared by the deliverer's pass)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3660:
        raise ValidationError(f"days must be a whole number between 0 and 3660, not {days!r}")
    moment = _aware(now or ledger.clock())
    out = []
    for pack in packs:
        expires = _aware(pack.invalid_time)
        if expires <= moment:
            continue
        if pack.units_at_risk <= 0:
            ledger.outbox.clear_alert(PACK_BUDGET_ID, str(pack.id), KIND_PACK_EXPIRY, moment)
            continue
        if expires - moment > timedelta(days=days):
            continue
        written = _write_pack_alert(ledger, pack, moment, expires, days)
        if written is not None:
            out.append(written)
    return out


def _usd_at_risk(pack: PackLike) -> Decimal | None:
    given = getattr(pack, "usd_at_risk", None)
    if isinstance(given, Decimal):
        return given
    for attr in ("product_type", "pack_type"):
        price = USD_PER_UNIT.get(str(getattr(pack, attr, "")))
        if price is not None:
            return MONEY.multiply(pack.units_at_risk, price)
    return None


def _write_pack_alert(
    ledger: Ledger, pack: PackLike, now: datetime, expires: datetime, days: int
) -> AlertRecord | None:
    at_risk = _round(pack.units_at_risk)
    remaining = _round(pack.remaining)
    usd = _usd_at_risk(pack)
    cents = None if usd is None else usd.quantize(Decimal("0.01"), context=MONEY)
    worth = "" if cents is None else f" (worth USD {format_amount(cents)})"
    left = expires - now
    in_days = f"{left.days} day(s)" if left.days else f"{_duration(left // timedelta(milliseconds=1))}"
    message = (
        f"Resource pack {pack.name} ({pack.pack_type}, {pack.id}) expires on "
        f"{expires.strftime('%Y-%m-%d %H:%M')} UTC, in {in_days}, with {format_amount(at_risk)} of its "
        f"{format_amount(remaining)} remaining units unused at the current burn rate{worth}"
    )
    details: dict[str, Any] = {
        "trigger": "pack-expiry",
        "unit": "units",
        "pack_id": str(pack.id),
        "pack_name": pack.name,
        "pack_type": pack.pack_type,
        "expires_at": expires.isoformat(),
        "remaining": str(remaining),
        "units_at_risk": str(at_risk),
        "usd_at_risk": None if usd is None else str(usd),
        "days": days,
        "window_start": (now - timedelta(days=max(days, 1))).isoformat(),
        "window_end": now.isoformat(),
    }
    return ledger.outbox.write_alert(
        budget_id=PACK_BUDGET_ID,
        scope="account",
        window="pack",
        window_key=str(pack.id),
        kind=KIND_PACK_EXPIRY,
        threshold=KIND_PACK_EXPIRY,
        used=MONEY.subtract(remaining, at_risk),
        reserved=Decimal("0.000"),
        limit=remaining,
        message=message,
        details=details,
        now=now,
    )


def stored_packs(ledger: Ledger) -> list[PackLike] | None:
    """The packs of the snapshot :mod:`kling_cost.bill.packs` saved in the ledger
    (``load_snapshot``) that have an expiry time, or None when it holds no snapshot."""
    found = load_snapshot(ledger)
    if found is None:
        return None
    return [_Expiring(p) for p in found.packs if p.invalid_time is not None]


@dataclass(frozen=True)
class _Expiring:
    """A snapshot's pack that expires (its ``invalid_time`` known), as a :class:`PackLike`."""

    pack: PackStatus

    @property
    def pack_type(self) -> str:
        return self.pack.pack_type

    @property
    def name(self) -> str:
        return self.pack.name

    @property
    def id(self) -> str:
        return self.pack.id

    @property
    def remaining(self) -> Decimal:
        return self.pack.remaining

    @property
    def invalid_time(self) -> datetime:
        if self.pack.invalid_time is None:  # pragma: no cover - filtered by stored_packs
            raise ValidationError(f"pack {self.pack.id} has no expiry time")
        return self.pack.invalid_time

    @property
    def units_at_risk(self) -> Decimal:
        return self.pack.units_at_risk


def evaluate(
    ledger: Ledger,
    now: datetime | None = None,
    packs: Iterable[PackLike] | None = None,
    *,
    days: int = PACK_EXPIRY_DAYS,
) -> list[AlertRecord]:
    """Project every budget and write the alerts due: ``forecast`` for projections over their
    limit, ``pack-expiry`` for ``packs`` (default: the stored packs snapshot, when there is one).
    Returns the alerts written now; the sinks get them on the next delivery pass."""
    moment = _aware(now or ledger.clock())
    out = forecast_alerts(ledger, forecast(ledger, moment))
    chosen = stored_packs(ledger) if packs is None else list(packs)
    if chosen:
        out.extend(pack_expiry_alerts(ledger, chosen, moment, days))
    return out
