"""Settling reservations: window counters, status moves, charge rows, leases and sweeps."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..budgets import Budget
from ..errors import ReservationError, ValidationError
from ..money import to_storage
from ..text import clean_text
from ._rows import (
    BUDGET_SELECT,
    RES_SELECT,
    Conflict,
    Cursor,
    budget_from_row,
    clean_metadata,
    from_ms,
    replace_reservation,
    reservation_from_row,
    reservation_id_of,
    text_or_none,
    to_ms,
)
from .cache_store import RequestCacheStore
from .hooks import SettledCharge, WindowState
from .models import EXPIRED, RESERVED, Reservation

__all__ = ["LedgerSettlement", "overage"]


def overage(budget: Budget, level: int, rise: int) -> int:
    """How far a change that lifted a window's ``used + reserved`` by ``rise`` to ``level``
    took it past the budget's limit (thousandths): the rise of ``max(0, level - limit)``."""
    if rise <= 0:
        return 0
    limit = to_storage(budget.limit)
    return max(0, level - limit) - max(0, level - rise - limit)


class LedgerSettlement(RequestCacheStore):
    """The shared steps of commit, release and sweep, and the lease operations."""

    def _settle_windows(
        self, cur: Cursor, res: Reservation, held: int, spent: int, rise: int | None = None
    ) -> list[WindowState]:
        """Move ``held`` out of reserved and ``spent`` into used on every window it counts in;
        returns the windows' new counters (for hooks that watch budgets), with the overage
        this settlement caused on each.

        ``rise``: how much this operation lifted ``used + reserved`` (default ``spent -
        held``; a :meth:`charge` that held and spent in one go lifted it by ``spent``)."""
        rise = spent - held if rise is None else rise
        counters: list[tuple[int, str, int, int]] = []
        for budget_id, window_key in res.windows:
            # ``spent`` counts only where the budget still counts the reservation's unit: a
            # budget may have switched unit once this hold was gone (a lapsed lease settled
            # late); its counters never take another unit.
            cur.execute(
                "UPDATE budget_windows SET reserved_milli = reserved_milli - ?, used_milli = used_milli "
                "+ CASE WHEN (SELECT unit FROM budgets WHERE id = ?) = ? THEN ? ELSE 0 END "
                "WHERE budget_id = ? AND window_key = ? "
                "RETURNING used_milli, reserved_milli, (SELECT unit FROM budgets WHERE id = ?)",
                (held, budget_id, res.unit, spent, budget_id, window_key, budget_id),
            )
            row = cur.fetchone()
            # None: the budget was deleted since; nothing to keep counting
            if row is not None and row[2] == res.unit:
                counters.append((budget_id, window_key, int(row[0]), int(row[1])))
        if not counters or (rise <= 0 and not self._wants_settle_states(held, spent)):
            return []
        ids = sorted({c[0] for c in counters})
        cur.execute(BUDGET_SELECT + f" WHERE id IN ({','.join('?' * len(ids))})", ids)
        budgets = {b.id: b for b in map(budget_from_row, cur.fetchall())}
        return [
            WindowState(budgets[bid], key, used, reserved, overage(budgets[bid], used + reserved, rise))
            for bid, key, used, reserved in counters
            if bid in budgets
        ]

    def _mark(
        self,
        cur: Cursor,
        res: Reservation,
        status: str,
        now: datetime,
        actual_milli: int | None,
        task_id: str | None,
        *,
        metadata_changed: bool = False,
    ) -> Reservation:
        """Move the reservation row from its current status to ``status`` (or Conflict);
        the metadata column is rewritten only when the caller changed it."""
        settled = to_ms(now)
        sets = "status = ?, actual_milli = ?, settled_at = ?, task_id = ?"
        params: list[Any] = [status, actual_milli, settled, task_id]
        if metadata_changed:
            sets += ", metadata = ?"
            params.append(json.dumps(res.metadata))
        cur.execute(
            f"UPDATE reservations SET {sets} WHERE id = ? AND status = ?", [*params, res.id, res.status]
        )
        if cur.rowcount != 1:  # settled concurrently: retry and report the settled state
            raise Conflict(f"reservation {res.id} changed while settling")
        return replace_reservation(res, status=status, settled_at=from_ms(settled))

    # -- leases ------------------------------------------------------------------------------

    def attach_task(
        self,
        reservation: Reservation | str,
        task_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: timedelta | None = None,
    ) -> Reservation:
        """Record the Kling task id (and extra metadata) of an accepted request.

        ``ttl`` pushes a live reservation's lease to at least ``now + ttl``: a task Kling
        accepted may still be charged, so its credits must stay held until it ends.
        """
        res_id = reservation_id_of(reservation)
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id must be a non-empty string")
        task_id = clean_text(task_id)
        if ttl is not None and (not isinstance(ttl, timedelta) or ttl <= timedelta(0)):
            raise ValidationError(f"ttl must be a positive timedelta, not {ttl!r}")
        extra = clean_metadata(metadata)

        def run() -> Reservation:
            with self._transaction() as cur:
                now = self._now(cur)
                current = self._locked(cur, res_id)
                meta = {**current.metadata, **extra}
                expires = to_ms(current.expires_at)
                if ttl is not None and current.status == RESERVED:
                    expires = max(expires, to_ms(now + ttl))
                cur.execute(
                    "UPDATE reservations SET task_id = ?, metadata = ?, expires_at = ? WHERE id = ?",
                    (task_id, json.dumps(meta), expires, res_id),
                )
                return replace_reservation(
                    current, task_id=task_id, metadata=meta, expires_at=from_ms(expires)
                )

        return self._retrying(run)

    def extend(self, reservation: Reservation | str, ttl: timedelta) -> Reservation:
        """Push a reservation's lease to ``now + ttl`` (for tasks that run long). Works while
        it is still held, even if its lease lapsed and no sweep has reclaimed it yet."""
        res_id = reservation_id_of(reservation)
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise ValidationError(f"ttl must be a positive timedelta, not {ttl!r}")
        with self._transaction() as cur:
            now = self._now(cur)
            current = self._locked(cur, res_id)
            if current.status != RESERVED:
                raise ReservationError(
                    f"reservation {res_id} is {current.status}, no longer held; its lease cannot be extended"
                )
            expires = to_ms(now + ttl)
            cur.execute("UPDATE reservations SET expires_at = ? WHERE id = ?", (expires, res_id))
            return replace_reservation(current, expires_at=from_ms(expires))

    def sweep(self) -> int:
        """Reclaim every reservation whose lease has expired; returns how many."""

        def run() -> int:
            with self._transaction() as cur:
                return self._sweep(cur, self._now(cur))

        return self._retrying(run)

    def _sweep_due(self, cur: Cursor, now: datetime, *, force: bool) -> None:
        now_ms = to_ms(now)
        if force or now_ms >= self._next_sweep_ms:
            self._sweep(cur, now)
            self._next_sweep_ms = now_ms + int(self.sweep_interval.total_seconds() * 1000)

    def _has_expired(self) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "SELECT 1 FROM reservations WHERE status = 'reserved' AND expires_at <= ? LIMIT 1",
                (to_ms(self._now(cur)),),
            )
            return cur.fetchone() is not None

    def _sweep(self, cur: Cursor, now: datetime) -> int:
        cur.execute(RES_SELECT + " WHERE status = 'reserved' AND expires_at <= ? ORDER BY id", (to_ms(now),))
        expired = [reservation_from_row(row) for row in cur.fetchall()]
        for res in expired:
            self._settle_windows(cur, res, to_storage(res.amount), 0)
            self._mark(cur, res, EXPIRED, now, None, res.task_id)
        return len(expired)

    def _locked(self, cur: Cursor, res_id: str) -> Reservation:
        cur.execute(RES_SELECT + " WHERE id = ?" + self._lock_reservation_sql(), (res_id,))
        row = cur.fetchone()
        if row is None:
            raise ReservationError(f"reservation {res_id!r} does not exist in this ledger")
        return reservation_from_row(row)

    def _insert_charge(
        self,
        cur: Cursor,
        now: datetime,
        res: Reservation,
        status: str,
        spent: int,
        task_id: str | None,
        states: Sequence[WindowState],
    ) -> None:
        meta = res.metadata
        duration = meta.get("duration")
        task_id = text_or_none(task_id)
        over = max((s.overage_milli for s in states), default=0)
        charge = SettledCharge(
            id=None,
            status=status,
            created_at_ms=to_ms(res.created_at),
            settled_at_ms=to_ms(now),
            estimate_milli=to_storage(res.amount),
            actual_milli=spent,
            scopes=res.scopes,
            task_id=task_id,
            kind=text_or_none(meta.get("kind") or meta.get("endpoint")),
            model=text_or_none(meta.get("model") or meta.get("model_name")),
            mode=text_or_none(meta.get("mode")),
            duration=int(duration) if isinstance(duration, (int, str)) and str(duration).isdigit() else None,
            audio=meta.get("audio") in (True, "on", "true") or meta.get("sound") == "on",
            metadata=meta,
            unit=res.unit,
            overage_milli=over,
        )
        cur.execute(
            "INSERT INTO charges (reservation_id, idempotency_key, status, created_at, settled_at, "
            "estimate_milli, actual_milli, scopes, task_id, kind, model, mode, duration, audio, "
            "prompt_hash, prompt_preview, metadata, unit, catalog, catalog_date, overage_milli) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                res.id,
                res.idempotency_key,
                status,
                charge.created_at_ms,
                charge.settled_at_ms,
                charge.estimate_milli,
                spent,
                json.dumps(res.scopes),
                task_id,
                charge.kind,
                charge.model,
                charge.mode,
                charge.duration,
                1 if charge.audio else 0,
                text_or_none(meta.get("prompt_hash")),
                text_or_none(meta.get("prompt_preview")),
                json.dumps(meta),
                res.unit,
                res.catalog,
                res.catalog_date,
                over,
            ),
        )
        for hook in self.hooks:
            hook.after_settle(cur, now, charge, states)
