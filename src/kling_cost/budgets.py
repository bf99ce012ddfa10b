"""Scopes, budget windows in IANA time zones, and the budget record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ValidationError
from .money import MONEY, money_context, parse_amount

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_UNIT",
    "UNITS",
    "WINDOWS",
    "Budget",
    "Usage",
    "Window",
    "normalise_scopes",
    "parse_thresholds",
    "unit_advice",
    "validate_scope",
    "validate_tz",
    "validate_unit",
    "window_at",
]

WINDOWS = ("day", "week", "month", "lifetime")
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
UNITS = ("units", "credits")
"""What a budget counts: ``units`` (Kling's API resource-pack units, the ``kling-api`` catalog)
or ``credits`` (the consumer app's credits, the ``kling-app-credits`` catalog)."""
DEFAULT_UNIT = "units"

_SCOPE = re.compile(r"account|[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9][A-Za-z0-9._@/+-]{0,127}")


def validate_scope(scope: object) -> str:
    """``account`` or ``kind:id`` (``project:film``, ``key:alice``, ``user:bob``), exactly: case
    matters, and nothing else (no whitespace, newline or control character) is accepted."""
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
        raise ValidationError(
            f"scope {scope!r} is not valid; use 'account' or 'kind:id' such as 'project:film', "
            "'key:alice' (kind: lowercase letters, digits, - or _; id: letters, digits, ._@/+-)"
        )
    return scope


def normalise_scopes(scopes: object) -> tuple[str, ...]:
    """Validated, de-duplicated, sorted scopes, always including ``account``."""
    if isinstance(scopes, str):
        scopes = [scopes]
    if scopes is None:
        scopes = []
    if not isinstance(scopes, (list, tuple, set, frozenset)):
        raise ValidationError(f"scopes must be a list of scope strings, not {type(scopes).__name__}")
    return tuple(sorted({"account", *(validate_scope(s) for s in scopes)}))


def validate_tz(tz: object) -> str:
    if not isinstance(tz, str) or not tz:
        raise ValidationError(f"time zone {tz!r} is not an IANA zone name such as 'Europe/Paris'")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ("Europe"), a name too long
        raise ValidationError(
            f"time zone {tz!r} is unknown; use an IANA name such as 'UTC' or 'America/New_York'"
        ) from None
    return tz


def validate_unit(unit: object) -> str:
    """``units`` or ``credits`` (see :data:`UNITS`)."""
    if unit not in UNITS:
        raise ValidationError(
            f"unit {unit!r} is unknown; allowed: {', '.join(UNITS)} "
            "(units: Kling's API resource-pack units; credits: the Kling app's credits)"
        )
    return str(unit)


def validate_window(window: object) -> str:
    if window not in WINDOWS:
        raise ValidationError(f"window {window!r} is unknown; allowed: {', '.join(WINDOWS)}")
    return str(window)


def parse_thresholds(thresholds: object, *, alerts: bool = True) -> tuple[Decimal, ...]:
    """Fractions of the limit in (0, 1], e.g. ``[0.5, 0.8, 1]`` (strings or Decimals).

    ``None`` means the default (``0.5, 0.8, 1``). An empty list is refused: a budget without
    thresholds never alerts, so switching threshold alerts off must be said explicitly with
    ``alerts=False`` (which returns no thresholds).
    """
    if not isinstance(alerts, bool):
        raise ValidationError(f"alerts must be True or False, not {alerts!r}")
    if not alerts:
        if thresholds is not None:
            raise ValidationError(
                "give thresholds or alerts=False, not both (alerts=False switches threshold alerts off)"
            )
        return ()
    if thresholds is None:
        return DEFAULT_THRESHOLDS
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise ValidationError("thresholds must be a list such as ['0.5', '0.8', '1']")
    out = set()
    for raw in thresholds:
        value = raw if isinstance(raw, Decimal) else None
        if value is None:
            try:
                value = Decimal(str(raw))
            except ArithmeticError:
                raise ValidationError(f"threshold {raw!r} is not a number") from None
        if not value.is_finite() or not 0 < value <= 1:
            raise ValidationError(f"threshold {raw!r} must be a fraction in (0, 1], e.g. 0.8")
        out.add(value.normalize(MONEY))
    if not out:
        raise ValidationError(
            "thresholds is empty, which would switch this budget's alerts off; give fractions such "
            "as ['0.5', '0.8', '1'], or pass alerts=False to switch threshold alerts off on purpose"
        )
    return tuple(sorted(out))


@dataclass(frozen=True)
class Window:
    """One budget window: its key (``2026-11-27``, ``2026-W48``, ``2026-11``, ``lifetime``) and bounds."""

    kind: str
    key: str
    start: datetime | None
    end: datetime | None


def window_at(kind: str, tz: str, at: datetime) -> Window:
    """The window of ``kind`` containing instant ``at``, with bounds in ``tz`` local time.

    Days start at local midnight (so DST days last 23 or 25 hours), weeks on Monday,
    months on the 1st. ``lifetime`` has no bounds.
    """
    if at.tzinfo is None:
        raise ValidationError("times must be timezone-aware (UTC)")
    if kind == "lifetime":
        return Window(kind, "lifetime", None, None)
    if kind not in WINDOWS:
        raise ValidationError(f"window {kind!r} is unknown; allowed: {', '.join(WINDOWS)}")
    try:
        return _window(kind, ZoneInfo(tz), at)
    except (OverflowError, ValueError) as exc:  # a window reaching past year 9999 or before year 1
        raise ValidationError(
            f"{at.isoformat()} is out of range: its {kind} in {tz} does not fit between years 1 and 9999"
        ) from exc


def _window(kind: str, zone: ZoneInfo, at: datetime) -> Window:
    local = at.astimezone(zone)
    day = local.date()
    if kind == "day":
        first, after = day, day + timedelta(days=1)
        key = first.isoformat()
    elif kind == "week":
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
        iso = first.isocalendar()
        key = f"{iso.year}-W{iso.week:02d}"
    else:  # month
        first = day.replace(day=1)
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        key = first.strftime("%Y-%m")
    return Window(kind, key, _midnight(first, zone), _midnight(after, zone))


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class Budget:
    """A ceiling on one scope for one kind of window."""

    id: int
    scope: str
    window: str
    limit: Decimal
    tz: str = "UTC"
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    max_per_request: Decimal | None = None
    unit: str = DEFAULT_UNIT
    """What the limit counts: ``units`` or ``credits``; only reservations priced in the same
    unit may touch this budget."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "window": self.window,
            "unit": self.unit,
            "limit": str(self.limit),
            "tz": self.tz,
            "thresholds": [str(t) for t in self.thresholds],
            "max_per_request": None if self.max_per_request is None else str(self.max_per_request),
        }


@dataclass(frozen=True)
class Usage:
    """Where one budget stands in one window."""

    budget: Budget
    window: Window
    used: Decimal
    reserved: Decimal

    @property
    def scope(self) -> str:
        return self.budget.scope

    @property
    def limit(self) -> Decimal:
        return self.budget.limit

    @property
    def unit(self) -> str:
        return self.budget.unit

    @property
    def remaining(self) -> Decimal:
        with money_context():
            return max(Decimal("0.000"), self.budget.limit - self.used - self.reserved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.budget.scope,
            "window": self.budget.window,
            "window_key": self.window.key,
            "start": None if self.window.start is None else self.window.start.isoformat(),
            "end": None if self.window.end is None else self.window.end.isoformat(),
            "tz": self.budget.tz,
            "unit": self.budget.unit,
            "limit": str(self.limit),
            "used": str(self.used),
            "reserved": str(self.reserved),
            "remaining": str(self.remaining),
        }


def unit_advice(budget: Budget, unit: str) -> str:
    """What to do when something priced in ``unit`` meets ``budget`` of another unit. Another
    scope is no way out of ``account``: every reservation counts on it."""
    if budget.scope == "account":
        return (
            f"every reservation counts on account, so change that budget's unit (kling-cost budget "
            f"set account LIMIT --window {budget.window} --unit {unit}, while nothing is used or held "
            f"in it) or delete it (kling-cost budget delete account --window {budget.window})"
        )
    return (
        f"give {unit} a budget of their own (kling-cost budget set SCOPE LIMIT --unit {unit} "
        "on another scope)"
    )


def parse_limit(value: object, what: str = "limit") -> Decimal:
    return parse_amount(value, what=what)
