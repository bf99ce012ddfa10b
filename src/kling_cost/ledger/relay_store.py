"""The callbacks the proxy relays to its clients, as a store of the ledger (``ledger.relays``):
the ``proxy_relays`` table.

One row per task status (``UNIQUE (task_id, status)``): Kling may call back more than once
for the same status (at least once, out of order), and each is relayed once. Delivery mirrors
the alert outbox (:mod:`.outbox_store`): a claim is a short transaction that stamps due rows
with a random token, counts the attempt and pushes ``next_at`` one lease ahead, so other
relayers (threads, processes, machines, on SQLite or PostgreSQL) skip the row while it is
being sent, and a relayer that dies mid-send leaves it due again once the lease ends
(delivery is at least once). Nothing is kept in memory: a restarted relayer finds everything
in the table. :mod:`kling_cost.proxy.relay` drives it and never runs SQL itself.

States: ``pending`` (waiting for its next attempt, or claimed), ``delivered`` (the client
answered 2xx), ``failed`` (given up: no more attempts).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..text import bad_text, clean_text
from ..timestamps import from_ms, to_ms
from .backend import retrying

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["MAX_ERROR", "RELAY_STATES", "Relay", "RelayStore"]

RELAY_STATES = ("pending", "delivered", "failed")
"""What a relay can be: waiting (or being sent), delivered, or given up."""

MAX_ERROR = 300
"""Longest ``last_error`` kept (a few words on why the last attempt failed)."""

MAX_SQL_INT = 2**63 - 1

_COLUMNS = (
    "id, key_id, task_id, status, url, body, state, attempts, next_at, last_error, claim, "
    "created_at, delivered_at"
)
_DUE = "state = 'pending' AND next_at <= ?"


@dataclass(frozen=True)
class Relay:
    """A callback to relay to a client's URL, as the ledger holds it."""

    id: int
    key_id: int
    task_id: str
    status: str
    """The task status the callback reports (one relay per task and status)."""
    url: str
    body: str
    """The callback's body, relayed as it came (UTF-8 on the wire)."""
    state: str
    """``pending``, ``delivered`` or ``failed`` (given up)."""
    attempts: int
    """Attempts started so far (a claim counts one)."""
    next_at: datetime
    """When it is due (while claimed: when the claim lapses)."""
    last_error: str | None
    claim: str | None
    """The token of the relayer sending it, while one is."""
    created_at: datetime
    delivered_at: datetime | None

    @property
    def webhook_id(self) -> str:
        """The ``webhook-id`` of every attempt (stable, so a receiver can drop duplicates)."""
        return f"relay_{self.id}"


def _relay(row: Any) -> Relay:
    return Relay(
        id=int(row[0]),
        key_id=int(row[1]),
        task_id=row[2],
        status=row[3],
        url=row[4],
        body=row[5],
        state=row[6],
        attempts=int(row[7]),
        next_at=from_ms(int(row[8])),
        last_error=row[9],
        claim=row[10],
        created_at=from_ms(int(row[11])),
        delivered_at=None if row[12] is None else from_ms(int(row[12])),
    )


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"a relay's {what} must be a non-empty string, not {value!r}")
    problem = bad_text(value)
    if problem is not None:
        raise ValidationError(f"a relay's {what} {problem}")
    return value


def _body(body: object) -> str:
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("a relayed callback body must be UTF-8 text (JSON)") from None
    elif isinstance(body, str):
        text = body
    else:
        raise ValidationError(f"a relayed callback body must be bytes or str, not {type(body).__name__}")
    problem = bad_text(text)
    if problem is not None:
        raise ValidationError(f"a relayed callback body {problem}")
    return text


def _positive(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{what} must be a whole number of at least 1, not {value!r}")
    return value


class RelayStore:
    """One ledger's relays: enqueue, claim the due ones, record each outcome, list them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def enqueue(self, key_id: int, task_id: str, status: str, url: str, body: bytes | str) -> bool:
        """Queue ``body`` for ``url`` unless this task's ``status`` was queued already (Kling's
        duplicate callbacks relay once). Due at once. True if a row was written."""
        key_id = _positive(key_id, "key_id")
        task_id, status, url = _text(task_id, "task_id"), _text(status, "status"), _text(url, "url")
        text = _body(body)

        def run() -> bool:
            with self.ledger.transaction() as cur:
                now = to_ms(cur.now)
                cur.execute(
                    "INSERT INTO proxy_relays (key_id, task_id, status, url, body, state, attempts, "
                    "next_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?) "
                    "ON CONFLICT (task_id, status) DO NOTHING",
                    (key_id, task_id, status, url, text, now, now),
                )
                return bool(cur.rowcount == 1)

        return retrying(run)

    def claim_due(self, limit: int, lease: timedelta) -> list[Relay]:
        """Claim up to ``limit`` due rows (oldest due first) for ``lease``: each gets a fresh
        token, one more attempt, and ``next_at`` one lease ahead, so no other relayer takes
        it meanwhile; one whose lease lapsed (its relayer died) is due again."""
        limit = _positive(limit, "limit")
        if not isinstance(lease, timedelta) or lease <= timedelta(0):
            raise ValidationError(f"lease must be a positive timedelta, not {lease!r}")
        token = secrets.token_hex(12)

        def run() -> list[Relay]:
            with self.ledger.transaction() as cur:
                now = to_ms(cur.now)
                cur.execute(
                    "UPDATE proxy_relays SET claim = ?, next_at = ?, attempts = attempts + 1 "
                    f"WHERE id IN (SELECT id FROM proxy_relays WHERE {_DUE} ORDER BY next_at, id "
                    f"LIMIT ?) AND {_DUE}",
                    (token, to_ms(cur.now + lease), now, min(limit, MAX_SQL_INT), now),
                )
                if cur.rowcount == 0:
                    return []
                cur.execute(f"SELECT {_COLUMNS} FROM proxy_relays WHERE claim = ? ORDER BY id", (token,))
                return [_relay(row) for row in cur.fetchall()]

        return retrying(run)

    def delivered(self, relay: Relay) -> bool:
        """Record that the client accepted ``relay``. A success is a fact: it is recorded even
        when the claim lapsed meanwhile. False if the row was no longer pending."""

        def run() -> bool:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "UPDATE proxy_relays SET state = 'delivered', delivered_at = ?, claim = NULL, "
                    "last_error = NULL WHERE id = ? AND state = 'pending'",
                    (to_ms(cur.now), relay.id),
                )
                return bool(cur.rowcount == 1)

        return retrying(run)

    def failed(self, relay: Relay, error: str, next_at: datetime | None) -> bool:
        """Record a failed attempt of the claimed ``relay``: due again at ``next_at``, or given
        up (state ``failed``) when it is None. False (nothing changed) when the claim was lost
        meanwhile: its lease lapsed and another relayer took the row, or delivered it."""
        if not isinstance(error, str):
            raise ValidationError(f"error must be a string, not {type(error).__name__}")
        if next_at is not None and not isinstance(next_at, datetime):
            raise ValidationError(f"next_at must be a datetime or None, not {next_at!r}")
        reason = clean_text(" ".join(error.split())[:MAX_ERROR]) or "failed"

        def run() -> bool:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "UPDATE proxy_relays SET state = ?, next_at = ?, last_error = ?, claim = NULL "
                    "WHERE id = ? AND claim = ? AND state = 'pending'",
                    (
                        "failed" if next_at is None else "pending",
                        to_ms(cur.now if next_at is None else next_at),
                        reason,
                        relay.id,
                        relay.claim,
                    ),
                )
                return bool(cur.rowcount == 1)

        return retrying(run)

    def relay(self, relay_id: int) -> Relay | None:
        """One relay by id."""
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM proxy_relays WHERE id = ?", (relay_id,))
            row = cur.fetchone()
        return None if row is None else _relay(row)

    def relays(self, *, state: str | None = None, key_id: int | None = None, limit: int = 100) -> list[Relay]:
        """Relays, newest first, of one ``state`` and/or one key. A ``limit`` larger than
        storage integers hold means all."""
        limit = _positive(limit, "limit")
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            if state not in RELAY_STATES:
                raise ValidationError(f"relay state {state!r} is unknown; allowed: {', '.join(RELAY_STATES)}")
            where.append("state = ?")
            params.append(state)
        if key_id is not None:
            where.append("key_id = ?")
            params.append(_positive(key_id, "key_id"))
        sql = f"SELECT {_COLUMNS} FROM proxy_relays" + (" WHERE " + " AND ".join(where) if where else "")
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(
                sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, min(limit, MAX_SQL_INT))
            )
            return [_relay(row) for row in cur.fetchall()]
