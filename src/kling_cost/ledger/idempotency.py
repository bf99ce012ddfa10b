"""The idempotency rule: one key, one request.

The same key with the same request returns the reservation made first (a retry, a re-run, a
second process racing the first). The same key with a different request raises
:class:`~kling_cost.errors.IdempotencyConflict` and holds nothing: the first request's result
must never stand in for another one (a different amount or unit, or other budgets to charge).

A key whose reservation was released or expired before Kling accepted a task was never
charged; it may be reserved again, with new values (see :meth:`.holds.Holds.reserve`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import IdempotencyConflict
from ..money import format_amount, from_storage
from .records import ReservationRow

__all__ = ["IDEMPOTENT_FIELDS", "check_same_request", "differences"]

IDEMPOTENT_FIELDS: tuple[tuple[str, Callable[[ReservationRow], str]], ...] = (
    ("amount", lambda r: format_amount(from_storage(r.amount_milli))),
    ("scopes", lambda r: ", ".join(r.scopes)),
    ("unit", lambda r: r.unit),
)
"""What must be equal when a key is used again: (name, how to read it). A field of the request
that must match (a unit, a catalog) is one more line here."""


def differences(first: ReservationRow, this: ReservationRow) -> list[tuple[str, str, str]]:
    """``(field, first value, this value)`` for every field of :data:`IDEMPOTENT_FIELDS` that differs."""
    out = []
    for name, read in IDEMPOTENT_FIELDS:
        before, now = read(first), read(this)
        if before != now:
            out.append((name, before, now))
    return out


def check_same_request(first: ReservationRow, this: ReservationRow, key: str) -> None:
    """Raise :class:`IdempotencyConflict` when ``this`` request differs from the ``first`` one
    made under ``key``."""
    found = differences(first, this)
    if not found:
        return
    what = "; ".join(f"{name} {before} vs {now}" for name, before, now in found)
    raise IdempotencyConflict(
        f"idempotency key {key!r} was already used for a different request (reservation "
        f"{first.id}, {first.status}): {what} (first vs this one); use a new key for a "
        "different request. Nothing was reserved",
        key=key,
        differences=found,
        reservation_id=first.id,
    )
