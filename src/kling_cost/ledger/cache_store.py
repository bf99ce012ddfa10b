"""The dedup cache as a store of the ledger (``ledger.cache``): the ``request_cache`` table,
which request fingerprints succeeded and which are in flight.

The guard (:mod:`kling_cost.guard`) drives it through the ledger's ``cache_*`` methods, which
delegate here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..money import from_storage, parse_amount, to_storage
from ..timestamps import from_ms, to_ms
from .backend import Cursor, retrying

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["ABANDONED", "INFLIGHT", "SUCCEEDED", "CacheCalls", "CacheEntry", "RequestCache"]

INFLIGHT = "inflight"
SUCCEEDED = "succeeded"
ABANDONED = "abandoned"
"""In flight, but the caller paying for it gave up without knowing whether Kling accepted it
(its hold is kept): a waiter asks Kling before it takes over."""

_SELECT = (
    "SELECT fingerprint, status, endpoint, reservation_id, task_id, result, estimate_milli, "
    "created_at, updated_at, expires_at FROM request_cache"
)


@dataclass(frozen=True)
class CacheEntry:
    """A fingerprint that is in flight (someone is paying for it now) or succeeded (reusable)."""

    fingerprint: str
    status: str
    endpoint: str
    reservation_id: str | None
    task_id: str | None
    result: dict[str, Any] | None
    estimate: Decimal
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


def _entry(row: Any) -> CacheEntry:
    return CacheEntry(
        fingerprint=row[0],
        status=row[1],
        endpoint=row[2],
        reservation_id=row[3],
        task_id=row[4],
        result=None if row[5] is None else json.loads(row[5]),
        estimate=from_storage(int(row[6])),
        created_at=from_ms(int(row[7])),
        updated_at=from_ms(int(row[8])),
        expires_at=from_ms(int(row[9])),
    )


def _read(cur: Cursor, fingerprint: str) -> CacheEntry | None:
    cur.execute(_SELECT + " WHERE fingerprint = ?", (fingerprint,))
    row = cur.fetchone()
    return None if row is None else _entry(row)


class RequestCache:
    """Fingerprint rows: claimed in flight under a lease, then succeeded for a TTL."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def lookup(self, fingerprint: str) -> CacheEntry | None:
        """The live entry for ``fingerprint`` (in flight, or succeeded within its TTL)."""
        with self.ledger.transaction(snapshot=True) as cur:
            now = cur.now
            entry = _read(cur, fingerprint)
        return entry if entry is not None and entry.expires_at > now else None

    def claim(
        self, fingerprint: str, endpoint: str, estimate: Decimal, lease: timedelta
    ) -> tuple[bool, CacheEntry]:
        """Claim ``fingerprint`` as in flight for ``lease`` unless a live entry exists.

        Returns ``(True, new entry)`` for the caller who must now pay for the request, or
        ``(False, live entry)`` when another request in flight or a cached success covers it.
        """
        milli = to_storage(parse_amount(estimate, what="estimate", allow_zero=True))
        if lease <= timedelta(0):
            raise ValidationError("lease must be positive")

        def run() -> tuple[bool, CacheEntry]:
            with self.ledger.transaction() as cur:
                now = cur.now
                now_ms = to_ms(now)
                cur.execute(
                    "INSERT INTO request_cache (fingerprint, status, endpoint, estimate_milli, "
                    "created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status, "
                    "endpoint = excluded.endpoint, reservation_id = NULL, task_id = NULL, "
                    "result = NULL, estimate_milli = excluded.estimate_milli, "
                    "created_at = excluded.created_at, updated_at = excluded.updated_at, "
                    "expires_at = excluded.expires_at WHERE request_cache.expires_at <= ?",
                    (fingerprint, INFLIGHT, endpoint, milli, now_ms, now_ms, to_ms(now + lease), now_ms),
                )
                claimed = cur.rowcount == 1
                entry = _read(cur, fingerprint)
                if entry is None:  # pragma: no cover - the row was just written or read
                    raise ValidationError(f"cache entry {fingerprint} vanished")
                return claimed, entry

        return retrying(run)

    def attach(
        self,
        fingerprint: str,
        *,
        reservation_id: str | None = None,
        task_id: str | None = None,
        lease: timedelta | None = None,
    ) -> None:
        """Note the reservation and Kling task paying for an in-flight fingerprint (and
        optionally push its lease to ``now + lease``)."""
        with self.ledger.transaction() as cur:
            now = cur.now
            sets = ["updated_at = ?"]
            params: list[Any] = [to_ms(now)]
            if reservation_id is not None:
                sets.append("reservation_id = ?")
                params.append(reservation_id)
            if task_id is not None:
                sets.append("task_id = ?")
                params.append(task_id)
            if lease is not None:
                sets.append("expires_at = ?")
                params.append(to_ms(now + lease))
            params += [fingerprint, INFLIGHT]
            cur.execute(
                f"UPDATE request_cache SET {', '.join(sets)} WHERE fingerprint = ? AND status = ?",
                params,
            )

    def abandon(self, fingerprint: str, reservation_id: str) -> None:
        """The caller holding ``reservation_id`` gave up on its in-flight fingerprint without
        knowing whether Kling accepted it: waiters stop waiting for it and ask Kling. A claim
        its caller had not attached a reservation to yet (it failed, or was cancelled, right
        after reserving) is given that reservation, so waiters know which key to ask about."""
        with self.ledger.transaction() as cur:
            cur.execute(
                "UPDATE request_cache SET status = ?, reservation_id = ?, updated_at = ? "
                "WHERE fingerprint = ? AND status = ? AND (reservation_id = ? OR reservation_id IS NULL) "
                "AND task_id IS NULL",
                (ABANDONED, reservation_id, to_ms(cur.now), fingerprint, INFLIGHT, reservation_id),
            )

    def adopt(self, entry: CacheEntry, task_id: str) -> None:
        """Kling accepted the request of an in-flight or abandoned ``entry`` as ``task_id``:
        waiters now wait for that task."""
        with self.ledger.transaction() as cur:
            cur.execute(
                "UPDATE request_cache SET status = ?, task_id = ?, updated_at = ? WHERE fingerprint = ? "
                "AND status IN (?, ?) AND created_at = ? AND task_id IS NULL",
                (
                    INFLIGHT,
                    task_id,
                    to_ms(cur.now),
                    entry.fingerprint,
                    INFLIGHT,
                    ABANDONED,
                    to_ms(entry.created_at),
                ),
            )

    def forget(self, entry: CacheEntry) -> bool:
        """Delete the claim ``entry`` (its caller is gone and Kling never accepted its request)
        unless it changed since it was read; True if it was deleted."""
        with self.ledger.transaction() as cur:
            cur.execute(
                "DELETE FROM request_cache WHERE fingerprint = ? AND status IN (?, ?) "
                "AND created_at = ? AND task_id IS NULL",
                (entry.fingerprint, INFLIGHT, ABANDONED, to_ms(entry.created_at)),
            )
            return bool(cur.rowcount == 1)

    def complete(self, fingerprint: str, task: dict[str, Any], ttl: timedelta) -> None:
        """The request succeeded: identical requests within ``ttl`` reuse ``task`` for free."""
        with self.ledger.transaction() as cur:
            now = cur.now
            cur.execute(
                "UPDATE request_cache SET status = ?, task_id = ?, result = ?, updated_at = ?, "
                "expires_at = ? WHERE fingerprint = ?",
                (
                    SUCCEEDED,
                    task.get("task_id"),
                    json.dumps(task),
                    to_ms(now),
                    to_ms(now + ttl),
                    fingerprint,
                ),
            )

    def drop(self, fingerprint: str, *, task_id: str | None = None) -> None:
        """Forget a fingerprint (its request failed); with ``task_id``, only if still that task's."""
        with self.ledger.transaction() as cur:
            if task_id is None:
                cur.execute(
                    "DELETE FROM request_cache WHERE fingerprint = ? AND status = ?", (fingerprint, INFLIGHT)
                )
            else:
                cur.execute(
                    "DELETE FROM request_cache WHERE fingerprint = ? AND (task_id = ? OR task_id IS NULL)",
                    (fingerprint, task_id),
                )


class CacheCalls:
    """The dedup cache's operations as methods of the :class:`~.ledger.Ledger` (delegates)."""

    cache: RequestCache

    def cache_lookup(self, fingerprint: str) -> CacheEntry | None:
        """:meth:`.RequestCache.lookup`: the live dedup-cache entry of ``fingerprint``."""
        return self.cache.lookup(fingerprint)

    def cache_claim(
        self, fingerprint: str, endpoint: str, estimate: Decimal, lease: timedelta
    ) -> tuple[bool, CacheEntry]:
        """:meth:`.RequestCache.claim`: claim ``fingerprint`` as in flight unless a live entry exists."""
        return self.cache.claim(fingerprint, endpoint, estimate, lease)

    def cache_attach(
        self,
        fingerprint: str,
        *,
        reservation_id: str | None = None,
        task_id: str | None = None,
        lease: timedelta | None = None,
    ) -> None:
        """:meth:`.RequestCache.attach`: note who pays for an in-flight fingerprint."""
        self.cache.attach(fingerprint, reservation_id=reservation_id, task_id=task_id, lease=lease)

    def cache_abandon(self, fingerprint: str, reservation_id: str) -> None:
        """:meth:`.RequestCache.abandon`: its payer gave up on an in-flight fingerprint."""
        self.cache.abandon(fingerprint, reservation_id)

    def cache_adopt(self, entry: CacheEntry, task_id: str) -> None:
        """:meth:`.RequestCache.adopt`: Kling accepted an entry's request as ``task_id``."""
        self.cache.adopt(entry, task_id)

    def cache_forget(self, entry: CacheEntry) -> bool:
        """:meth:`.RequestCache.forget`: delete a claim nobody pays for any more."""
        return self.cache.forget(entry)

    def cache_complete(self, fingerprint: str, task: dict[str, Any], ttl: timedelta) -> None:
        """:meth:`.RequestCache.complete`: the request succeeded; reuse ``task`` within ``ttl``."""
        self.cache.complete(fingerprint, task, ttl)

    def cache_drop(self, fingerprint: str, *, task_id: str | None = None) -> None:
        """:meth:`.RequestCache.drop`: forget a fingerprint whose request failed."""
        self.cache.drop(fingerprint, task_id=task_id)
