"""Instants as storage integers: aware UTC datetimes <-> milliseconds since the Unix epoch.

The ledger stores every time as integer milliseconds (exact, no float, the same on every
backend); reports and alert messages read them back with :func:`from_ms`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .errors import ValidationError

__all__ = ["EPOCH", "from_ms", "to_ms", "utc_now"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def utc_now() -> datetime:
    """This machine's clock, as an aware UTC datetime (the ledger's default clock)."""
    return datetime.now(UTC)


def to_ms(at: datetime) -> int:
    """Aware datetime -> integer milliseconds since the epoch (exact, no float)."""
    if at.tzinfo is None:
        raise ValidationError("times must be timezone-aware")
    return (at - EPOCH) // _ONE_MS


def from_ms(ms: int) -> datetime:
    """Integer milliseconds since the epoch -> aware UTC datetime."""
    return EPOCH + ms * _ONE_MS
