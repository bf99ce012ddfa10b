"""Report periods in a chosen IANA time zone: ``30d`` / dates / instants, and constant-offset spans."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ..budgets import validate_tz
from ..errors import ValidationError
from ..ledger.rollup import BUCKET_MS, DAY_MS
from ..ledger.rollup_read import Segment
from ..timestamps import from_ms

__all__ = ["Segment", "day_key", "local_midnight", "parse_period", "parse_since", "parse_until", "segments"]

_DAYS = re.compile(r"^(\d{1,5})d$")
_ONE_MS = timedelta(milliseconds=1)
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)
"""Report periods lie between these days (in any zone): the ledger's clock starts at the Unix
epoch, and local midnights of dates near year 1 or 9999 do not exist in every zone."""
_EARLIEST = datetime(1969, 12, 31, tzinfo=UTC)  # FIRST_DAY's midnight in any zone is after this
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
_RANGE = f"reports cover {FIRST_DAY} to {LAST_DAY} (since {FIRST_DAY} covers everything)"


def zone(tz: str) -> ZoneInfo:
    return ZoneInfo(validate_tz(tz))


def local_midnight(day: date, tz: str) -> datetime:
    """The UTC instant at which ``day`` starts in ``tz``."""
    return datetime(day.year, day.month, day.day, tzinfo=zone(tz)).astimezone(UTC)


def _day_in_range(day: date, what: str, given: object) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValidationError(f"{what} {given!s} is out of range; {_RANGE}")
    return day


def _in_range(moment: datetime, what: str, given: object) -> datetime:
    if not _EARLIEST <= moment < _LATEST:
        raise ValidationError(f"{what} {given!s} is out of range; {_RANGE}")
    return moment


def today(tz: str, now: datetime) -> date:
    return now.astimezone(zone(tz)).date()


def parse_since(value: datetime | date | str | None, tz: str, now: datetime) -> datetime | None:
    """``30d`` (the last 30 local days, today included), ``YYYY-MM-DD`` (that day's local
    midnight), an ISO 8601 instant with an offset, a ``date`` or an aware ``datetime``."""
    if value is None or isinstance(value, datetime):
        return _aware(value, "since")
    if isinstance(value, date):
        return local_midnight(_day_in_range(value, "since", value), tz)
    text = value.strip()
    match = _DAYS.match(text)
    if match:
        days = int(match.group(1))
        if days < 1:
            raise ValidationError(f"since {value!r} must count at least one day")
        first = today(tz, now) - timedelta(days=days - 1)
        if first < FIRST_DAY:
            raise ValidationError(f"since {value!r} reaches back before {FIRST_DAY}; {_RANGE}")
        return local_midnight(first, tz)
    return _parse_moment(text, tz, "since", inclusive_end=False)


def parse_period(
    since: datetime | date | str | None, until: datetime | date | str | None, tz: str, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """:func:`parse_since` and :func:`parse_until` together; a period that ends before it starts
    (``--since`` and ``--until`` swapped) is an error, not a report of nothing spent."""
    start, end = parse_since(since, tz, now), parse_until(until, tz)
    if start is not None and end is not None and end < start:
        raise ValidationError(
            f"until {until!s} is before since {since!s}: the period ends before it starts; did you swap them?"
        )
    return start, end


def parse_until(value: datetime | date | str | None, tz: str) -> datetime | None:
    """``YYYY-MM-DD`` (that day included: the next local midnight), an ISO 8601 instant with an
    offset (excluded), a ``date`` (included) or an aware ``datetime`` (excluded)."""
    if value is None or isinstance(value, datetime):
        return _aware(value, "until")
    if isinstance(value, date):
        return local_midnight(_day_in_range(value, "until", value) + timedelta(days=1), tz)
    return _parse_moment(value.strip(), tz, "until", inclusive_end=True)


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("report times must be timezone-aware")
    return _in_range(value, what, value.isoformat())


def _parse_moment(text: str, tz: str, what: str, *, inclusive_end: bool) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        _day_in_range(day, what, text)
        return local_midnight(day + timedelta(days=1) if inclusive_end else day, tz)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{what} {text!r} is not a date; use Nd (e.g. 30d), YYYY-MM-DD or an ISO 8601 time with offset"
        ) from None
    if moment.tzinfo is None:
        raise ValidationError(f"{what} {text!r} needs a UTC offset, e.g. 2026-06-01T00:00:00+00:00")
    return _in_range(moment, what, text)


def offset_ms(tz: ZoneInfo, ms: int) -> int:
    off = from_ms(ms).astimezone(tz).utcoffset()
    return 0 if off is None else off // _ONE_MS


def segments(tz: str, start: int, end: int) -> list[Segment]:
    """Split ``[start, end)`` (UTC ms) into spans of one UTC offset each in ``tz``."""
    z = zone(tz)
    out: list[Segment] = []
    if end <= start:
        return out
    seg_start, off = start, offset_ms(z, start)
    probe = start
    while probe < end:
        nxt = min(probe + DAY_MS, end)
        nxt_off = offset_ms(z, nxt if nxt < end else end - 1)
        if nxt_off != off:  # a transition in (probe, nxt]: find its first millisecond
            lo, hi = probe, nxt
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_ms(z, mid) == off:
                    lo = mid
                else:
                    hi = mid
            out.append(Segment(seg_start, hi, off))
            seg_start, off = hi, offset_ms(z, hi)
            probe = hi
            if probe >= end - 1:
                break
            continue
        probe = nxt
    out.append(Segment(seg_start, end, off))
    return out


def hour_aligned(spans: list[Segment]) -> bool:
    """True when every span starts and ends on a UTC hour and keeps a whole-hour offset."""
    return all(
        s.start % BUCKET_MS == 0 and s.end % BUCKET_MS == 0 and s.offset % BUCKET_MS == 0 for s in spans
    )


def day_key(day: date, unit: str) -> str:
    """``2026-06-15`` / ``2026-W24`` / ``2026-06``: the same keys as budget windows."""
    if unit == "day":
        return day.isoformat()
    if unit == "week":
        iso = (day - timedelta(days=day.weekday())).isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return day.strftime("%Y-%m")


def local_day(ms: int, tz: ZoneInfo) -> date:
    return from_ms(ms).astimezone(tz).date()


def day_from_number(n: int) -> date:
    return date(1970, 1, 1) + timedelta(days=n)
