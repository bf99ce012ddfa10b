"""The bill's small state in the ledger (the ``bill_meta`` table of migration 10): named JSON
values that every process and machine sharing the ledger sees.

:mod:`kling_cost.bill.packs` keeps here the last resource-pack snapshot (``packs.snapshot``),
the budgets kept equal to what the packs hold (``packs.budgets``) and when ``/account/costs``
may next be asked (``packs.next_call``, :meth:`BillStore.take_slot`). It is a store on the
ledger's public transaction seam: ``BillStore(ledger)``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import StorageError, ValidationError
from ..timestamps import to_ms
from .backend import retrying

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["MAX_NAME", "BillStore"]

MAX_NAME = 200
"""Longest name of a value."""


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or "\x00" in name:
        raise ValidationError(f"a bill_meta name must be a text of 1 to {MAX_NAME} characters, not {name!r}")
    return name


class BillStore:
    """Get and set JSON values of ``bill_meta``, each write one transaction of the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def get(self, name: str) -> Any:
        """The value stored under ``name`` (decoded JSON), or ``None`` when there is none."""
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute("SELECT value FROM bill_meta WHERE name = ?", (_check_name(name),))
            row = cur.fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except ValueError as exc:
            raise StorageError(f"bill_meta {name!r} does not hold JSON: {exc}") from None

    def set(self, name: str, value: Any) -> None:
        """Store ``value`` (anything ``json.dumps`` writes) under ``name``, replacing any earlier."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"bill_meta {name!r}: the value is not JSON: {exc}") from None
        _check_name(name)

        def write() -> None:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "INSERT INTO bill_meta (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) "
                    "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (name, text, to_ms(cur.now)),
                )

        retrying(write)

    def delete(self, name: str) -> bool:
        """Forget ``name``; True when it was there."""
        with self.ledger.transaction() as cur:
            cur.execute("DELETE FROM bill_meta WHERE name = ?", (_check_name(name),))
            return bool(cur.rowcount)

    def take_slot(self, name: str, now_ms: int, interval_ms: int, *, max_ahead_ms: int | None = None) -> int:
        """Reserve the next call slot of a rate limit shared through the ledger: the slot is
        ``max(now_ms, the next free time stored under name)``, and the next free time becomes
        slot + ``interval_ms``. One transaction, the row locked (PostgreSQL) or every writer
        serialised (SQLite), so processes sharing the ledger never take the same slot.
        Returns the slot (ms); the caller waits until then. A stored next free time more than
        ``max_ahead_ms`` after ``now_ms`` is not believed (a machine whose clock is ahead wrote
        it, or it was tampered with): the limit starts again from now."""
        _check_name(name)
        return retrying(lambda: self._take_slot(name, now_ms, interval_ms, max_ahead_ms))

    def _take_slot(self, name: str, now_ms: int, interval_ms: int, max_ahead_ms: int | None) -> int:
        with self.ledger.transaction() as cur:
            cur.execute(
                "INSERT INTO bill_meta (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, "0", now_ms),
            )
            cur.execute(
                "SELECT value FROM bill_meta WHERE name = ?" + self.ledger.backend.lock_reservation, (name,)
            )
            row = cur.fetchone()
            try:
                free = int(json.loads(row[0]))
            except (TypeError, ValueError):
                free = 0  # an unreadable value: the limit starts again from now
            if max_ahead_ms is not None and free - now_ms > max_ahead_ms:
                free = now_ms
            slot = max(now_ms, free)
            cur.execute(
                "UPDATE bill_meta SET value = ?, updated_at = ? WHERE name = ?",
                (json.dumps(slot + interval_ms), now_ms, name),
            )
            return slot
