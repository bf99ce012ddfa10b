"""Settling reservations: commit, release, sweep, leases, cache hits; the charge rows.

Each method is the body of one transaction of the :class:`~.ledger.Ledger` (which opens it,
retries it on :class:`~.backend.Conflict` and converts what it hands out): it gets the cursor
and the transaction's time, works in integer thousandths throughout, and calls the hooks with
what it changed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ..errors import ReservationError
from ..timestamps import from_ms, to_ms
from .backend import Backend, Conflict, Cursor
from .holds import Request
from .hooks import LedgerHook, SettledCharge, WindowState
from .idempotency import check_same_request
from .models import CACHED, COMMITTED, EXPIRED, RELEASED, RESERVED
from .records import (
    BUDGET_SELECT,
    RES_COLUMNS,
    RES_SELECT,
    BudgetRow,
    ReservationRow,
    budget_row,
    new_id,
    reservation_by,
    reservation_row,
    text_or_none,
)

__all__ = [
    "CACHE_HIT",
    "FAILED",
    "INSERT_CHARGE",
    "SETTLE_WINDOW",
    "SUCCEEDED",
    "SWEEP_SELECT",
    "ChargeFields",
    "Settlement",
    "charge_fields",
    "charge_params",
    "overage",
]

SUCCEEDED = "succeeded"
FAILED = "failed"
CACHE_HIT = "cache_hit"
"""The statuses of a charge row."""


SETTLE_WINDOW = (
    "UPDATE budget_windows SET reserved_milli = reserved_milli - ?, used_milli = used_milli "
    "+ CASE WHEN (SELECT unit FROM budgets WHERE id = ?) = ? THEN ? ELSE 0 END "
    "WHERE budget_id = ? AND window_key = ? "
    "RETURNING used_milli, reserved_milli, (SELECT unit FROM budgets WHERE id = ?)"
)
"""Move a settled amount out of a window's reserved and what was spent into its used (held,
budget id, unit, spent, budget id, window key, budget id). ``spent`` counts only where the
budget still counts the reservation's unit: a budget may have switched unit once this hold
was gone (a lapsed lease settled late); its counters never take another unit."""

INSERT_CHARGE = (
    "INSERT INTO charges (reservation_id, idempotency_key, status, created_at, settled_at, "
    "estimate_milli, actual_milli, scopes, task_id, kind, model, mode, duration, audio, "
    "prompt_hash, prompt_preview, metadata, unit, catalog, catalog_date, overage_milli, "
    "rollup_deferred) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
"""A charge row (its id returned)."""

SWEEP_SELECT = RES_SELECT + " WHERE status = 'reserved' AND expires_at <= ?"
"""The held reservations whose lease has lapsed: read through the partial index of open holds
(an ``ORDER BY id`` here made SQLite scan every reservation instead, in the write transaction
of a reservation, once a second; they are sorted here)."""

ChargeFields = tuple[str | None, str | None, str | None, int | None, int, str | None, str | None]
"""kind, model, mode, duration, audio (0/1), prompt hash and prompt preview of a charge row."""


def charge_fields(meta: dict[str, Any]) -> ChargeFields:
    """The columns a charge row derives from its reservation's metadata (one rule, for the
    general path here and for the PostgreSQL functions' callers in :mod:`.pg_fast`)."""
    return (
        text_or_none(meta.get("kind") or meta.get("endpoint")),
        text_or_none(meta.get("model") or meta.get("model_name")),
        text_or_none(meta.get("mode")),
        _duration(meta.get("duration")),
        1 if meta.get("audio") in (True, "on", "true") or meta.get("sound") == "on" else 0,
        text_or_none(meta.get("prompt_hash")),
        text_or_none(meta.get("prompt_preview")),
    )


def charge_params(
    res: ReservationRow,
    status: str,
    settled_at: int,
    spent: int,
    task_id: str | None,
    fields: ChargeFields,
    overage_milli: int,
    deferred: int,
) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT_CHARGE` for the charge of ``res`` (its stored columns,
    the columns ``fields`` derived from its metadata, how the settlement ended, and 1 when a
    fold adds it to the report rollup: :mod:`.rollup_mark`)."""
    return (
        res.id,
        res.idempotency_key or res.id,
        status,
        res.created_at_ms,
        settled_at,
        res.amount_milli,
        spent,
        res.scopes_text(),
        task_id,
        *fields,
        res.metadata_text(),
        res.unit,
        res.catalog,
        res.catalog_date,
        overage_milli,
        deferred,
    )


_MAX_DURATION = 2**31 - 1
"""The largest duration the charges' ``duration`` column (an INTEGER) holds."""


def _duration(value: object) -> int | None:
    """A duration in seconds (an int, or a string of ASCII digits), else None: whatever came
    in the metadata (``"²"``, a thousand digits, more than an INTEGER holds) never makes a
    charge row fail to be written."""
    if isinstance(value, str) and 0 < len(value) <= 10 and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_DURATION:
        return value
    return None


def overage(budget: BudgetRow, level: int, rise: int) -> int:
    """How far a change that lifted a window's ``used + reserved`` by ``rise`` to ``level``
    took it past the budget's limit (thousandths): the rise of ``max(0, level - limit)``."""
    if rise <= 0:
        return 0
    limit = budget.limit_milli
    return max(0, level - limit) - max(0, level - rise - limit)


class Settlement:
    """The settling steps of one ledger: they share its backend (for row locks) and hooks."""

    def __init__(self, backend: Backend, hooks: list[LedgerHook], sweep_interval: timedelta) -> None:
        self.backend = backend
        self.hooks = hooks
        self.sweep_interval = sweep_interval
        """How often a reservation also sweeps lapsed leases (:meth:`sweep_due`)."""
        self._next_sweep_ms = 0
        self.rollup_deferred = 0
        """1 when the charges written here wait for a fold of the rollup (SQLite, migration 15)."""

    def locked(self, cur: Cursor, res_id: str) -> ReservationRow:
        """The reservation ``res_id``, its row locked until the transaction ends."""
        found = reservation_by(cur, "id", res_id, self.backend.lock_reservation)
        if found is None:
            raise ReservationError(f"reservation {res_id!r} does not exist in this ledger")
        return found

    # -- commit and release --------------------------------------------------------------------

    def commit(
        self,
        cur: Cursor,
        now: datetime,
        current: ReservationRow,
        actual_milli: int | None,
        task_id: str | None,
        force: bool,
        extra: dict[str, Any],
        *,
        rise: int | None = None,
    ) -> ReservationRow:
        """Commit the (locked) reservation ``current``; ``rise`` as in :meth:`settle_windows`."""
        res_id = current.id
        if current.status == COMMITTED:
            return current
        if current.status == RELEASED:
            raise ReservationError(f"reservation {res_id} was released; it cannot be committed")
        lapsed = current.status == EXPIRED or current.expires_at_ms <= to_ms(now)
        if lapsed and not force:
            raise ReservationError(
                f"reservation {res_id} expired at {from_ms(current.expires_at_ms).isoformat()} and its "
                "credits were reclaimed; commit with force=True to record a charge Kling made anyway"
            )
        amount = current.amount_milli
        spent = amount if actual_milli is None else actual_milli
        held = 0 if current.status == EXPIRED else amount
        states = self.settle_windows(cur, current, held, spent, rise)
        final_task = task_id or current.task_id
        meta = {**current.metadata, **extra} if extra else None
        settled = self.mark(cur, current, COMMITTED, now, spent, final_task, metadata=meta)
        self.insert_charge(cur, now, settled, SUCCEEDED, spent, final_task, states)
        return settled

    def commit_id(
        self,
        cur: Cursor,
        now: datetime,
        res_id: str,
        actual_milli: int | None,
        task_id: str | None,
        force: bool,
        extra: dict[str, Any],
    ) -> ReservationRow:
        """Commit the reservation ``res_id``: :meth:`commit_held` when the metadata is
        unchanged and it is held on a live lease, else :meth:`locked` and :meth:`commit`."""
        if not extra:
            done = self.commit_held(cur, now, res_id, actual_milli, task_id)
            if done is not None:
                return done
        return self.commit(cur, now, self.locked(cur, res_id), actual_milli, task_id, force, extra)

    def commit_held(
        self, cur: Cursor, now: datetime, res_id: str, actual_milli: int | None, task_id: str | None
    ) -> ReservationRow | None:
        """Commit ``res_id`` when it is still held on a live lease (the common case), its
        metadata unchanged: the row is moved and read back by one statement (``RETURNING``),
        then the windows and the charge as :meth:`commit` does. None when it is not held (or
        does not exist): the caller takes the general path (:meth:`locked`, :meth:`commit`)."""
        at = to_ms(now)
        cur.execute(
            "UPDATE reservations SET status = ?, actual_milli = COALESCE(?, amount_milli), settled_at = ?, "
            "task_id = COALESCE(?, task_id) WHERE id = ? AND status = ? AND expires_at > ? "
            f"RETURNING {RES_COLUMNS}",
            (COMMITTED, actual_milli, at, task_id or None, res_id, RESERVED, at),
        )
        row = cur.fetchone()
        if row is None:
            return None
        settled = reservation_row(row)
        spent = settled.amount_milli if settled.actual_milli is None else settled.actual_milli
        states = self.settle_windows(cur, settled, settled.amount_milli, spent)
        self.insert_charge(cur, now, settled, SUCCEEDED, spent, settled.task_id, states)
        return settled

    def release(
        self, cur: Cursor, now: datetime, current: ReservationRow, failed: bool | None
    ) -> ReservationRow:
        """Release the (locked) reservation ``current``; a failed generation gets a charge of 0."""
        if current.status in (RELEASED, EXPIRED):
            return current
        if current.status == COMMITTED:
            raise ReservationError(f"reservation {current.id} is already committed; it cannot be released")
        states = self.settle_windows(cur, current, current.amount_milli, 0)
        released = self.mark(cur, current, RELEASED, now, None, current.task_id)
        if failed or (failed is None and current.task_id):
            self.insert_charge(cur, now, current, FAILED, 0, current.task_id, states)
        return released

    def record_cache_hit(self, cur: Cursor, now: datetime, req: Request, task_id: str | None) -> bool:
        """Write a ``cached`` reservation row (``req.milli``: what it saved) and its charge of
        0; False when its idempotency key was recorded before (for the same request)."""
        at = to_ms(now)
        key = req.key
        hit = ReservationRow(
            id=new_id(now),
            idempotency_key=key,
            amount_milli=req.milli,
            status=CACHED,
            scopes=req.scopes,
            created_at_ms=at,
            expires_at_ms=at,
            metadata=req.meta,
            task_id=task_id,
            unit=req.unit,
            catalog=req.catalog,
            catalog_date=req.catalog_date,
            metadata_json=req.meta_json,
            scopes_json=req.scopes_json,
        )
        cur.execute(
            "INSERT INTO reservations (id, idempotency_key, amount_milli, actual_milli, "
            "status, scopes, created_at, expires_at, settled_at, task_id, windows, metadata, "
            "unit, catalog, catalog_date) "
            "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, '[]', ?, ?, ?, ?) "
            "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            (
                hit.id,
                hit.idempotency_key,
                hit.amount_milli,
                CACHED,
                hit.scopes_text(),
                hit.created_at_ms,
                hit.expires_at_ms,
                hit.created_at_ms,
                hit.task_id,
                hit.metadata_text(),
                hit.unit,
                hit.catalog,
                hit.catalog_date,
            ),
        )
        if cur.rowcount != 1:  # recorded before (or the key names a reservation)
            earlier = reservation_by(cur, "idempotency_key", key) if key else None
            if earlier is not None:
                check_same_request(earlier, hit, key or "")
            return False
        self.insert_charge(cur, now, hit, CACHE_HIT, 0, hit.task_id, [])
        return True

    # -- the shared steps ------------------------------------------------------------------------

    def wants_states(self, held: int, spent: int) -> bool:
        """Whether a settlement must look up its windows' counters for the hooks (see
        ``watches_budgets`` and ``watches_rises_only`` of :class:`~.hooks.LedgerHook`)."""
        for hook in self.hooks:
            if not getattr(hook, "watches_budgets", True):
                continue
            if getattr(hook, "watches_rises_only", False) and spent <= held:
                continue
            return True
        return False

    def settle_windows(
        self, cur: Cursor, res: ReservationRow, held: int, spent: int, rise: int | None = None
    ) -> list[WindowState]:
        """Move ``held`` out of reserved and ``spent`` into used on every window it counts in;
        returns the windows' new counters (for hooks that watch budgets), with the overage
        this settlement caused on each.

        ``rise``: how much this operation lifted ``used + reserved`` (default ``spent -
        held``; a charge that held and spent in one go lifted it by ``spent``)."""
        rise = spent - held if rise is None else rise
        counters: list[tuple[int, str, int, int]] = []
        for budget_id, window_key in res.windows:
            # ``spent`` counts only where the budget still counts the reservation's unit: a
            # budget may have switched unit once this hold was gone (a lapsed lease settled
            # late); its counters never take another unit.
            cur.execute(SETTLE_WINDOW, (held, budget_id, res.unit, spent, budget_id, window_key, budget_id))
            row = cur.fetchone()
            # None: the budget was deleted since; nothing to keep counting
            if row is not None and row[2] == res.unit:
                counters.append((budget_id, window_key, int(row[0]), int(row[1])))
        if not counters or (rise <= 0 and not self.wants_states(held, spent)):
            return []
        ids = sorted({c[0] for c in counters})
        cur.execute(BUDGET_SELECT + f" WHERE id IN ({','.join('?' * len(ids))})", ids)
        budgets = {b.id: b for b in map(budget_row, cur.fetchall())}
        return [
            WindowState(budgets[bid], key, used, reserved, overage(budgets[bid], used + reserved, rise))
            for bid, key, used, reserved in counters
            if bid in budgets
        ]

    def mark(
        self,
        cur: Cursor,
        res: ReservationRow,
        status: str,
        now: datetime,
        actual_milli: int | None,
        task_id: str | None,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> ReservationRow:
        """Move the reservation row from its current status to ``status`` (or Conflict), with
        its actual and task; the metadata column is rewritten only when the caller gives new
        ``metadata``. Returns the row as written."""
        settled = to_ms(now)
        sets = "status = ?, actual_milli = ?, settled_at = ?, task_id = ?"
        params: list[Any] = [status, actual_milli, settled, task_id]
        meta, meta_json = res.metadata, res.metadata_json
        if metadata is not None:
            meta, meta_json = metadata, json.dumps(metadata)
            sets += ", metadata = ?"
            params.append(meta_json)
        cur.execute(
            f"UPDATE reservations SET {sets} WHERE id = ? AND status = ?", [*params, res.id, res.status]
        )
        if cur.rowcount != 1:  # settled concurrently: retry and report the settled state
            raise Conflict(f"reservation {res.id} changed while settling")
        return res.settled(status, settled, actual_milli, task_id, meta, meta_json)

    def insert_charge(
        self,
        cur: Cursor,
        now: datetime,
        res: ReservationRow,
        status: str,
        spent: int,
        task_id: str | None,
        states: Sequence[WindowState],
    ) -> None:
        """Write the charge row of a settled reservation, then let the hooks see it."""
        meta = res.metadata
        task_id = text_or_none(task_id)
        over = max((s.overage_milli for s in states), default=0)
        fields = charge_fields(meta)
        kind, model, mode, duration, audio, _prompt_hash, _prompt_preview = fields
        settled_at = to_ms(now)
        params = charge_params(res, status, settled_at, spent, task_id, fields, over, self.rollup_deferred)
        cur.execute(INSERT_CHARGE, params)
        charge = SettledCharge(
            id=int(cur.fetchone()[0]),
            status=status,
            created_at_ms=res.created_at_ms,
            settled_at_ms=settled_at,
            estimate_milli=res.amount_milli,
            actual_milli=spent,
            scopes=res.scopes,
            task_id=task_id,
            kind=kind,
            model=model,
            mode=mode,
            duration=duration,
            audio=bool(audio),
            metadata=meta,
            unit=res.unit,
            overage_milli=over,
        )
        for hook in self.hooks:
            hook.after_settle(cur, now, charge, states)

    # -- leases ----------------------------------------------------------------------------------

    def attach_task(
        self,
        cur: Cursor,
        now: datetime,
        res_id: str,
        task_id: str,
        extra: dict[str, Any],
        ttl: timedelta | None,
    ) -> ReservationRow:
        """Record the task (and metadata) of ``res_id``; ``ttl`` pushes a live lease to at least
        ``now + ttl``."""
        current = self.locked(cur, res_id)
        meta = {**current.metadata, **extra}
        expires = current.expires_at_ms
        if ttl is not None and current.status == RESERVED:
            expires = max(expires, to_ms(now + ttl))
        meta_json = json.dumps(meta)
        cur.execute(
            "UPDATE reservations SET task_id = ?, metadata = ?, expires_at = ? WHERE id = ?",
            (task_id, meta_json, expires, res_id),
        )
        return replace(
            current, task_id=task_id, metadata=meta, metadata_json=meta_json, expires_at_ms=expires
        )

    def extend(self, cur: Cursor, now: datetime, res_id: str, ttl: timedelta) -> ReservationRow:
        """Push the lease of ``res_id``, still held, to ``now + ttl``."""
        current = self.locked(cur, res_id)
        if current.status != RESERVED:
            raise ReservationError(
                f"reservation {res_id} is {current.status}, no longer held; its lease cannot be extended"
            )
        expires = to_ms(now + ttl)
        cur.execute("UPDATE reservations SET expires_at = ? WHERE id = ?", (expires, res_id))
        return replace(current, expires_at_ms=expires)

    def has_expired(self, cur: Cursor) -> bool:
        """Whether any held reservation's lease has lapsed (a sweep would reclaim something)."""
        cur.execute(
            "SELECT 1 FROM reservations WHERE status = 'reserved' AND expires_at <= ? LIMIT 1",
            (to_ms(cur.now),),
        )
        return cur.fetchone() is not None

    def sweep_pending(self, now_ms: int) -> bool:
        """Whether the next reservation is due to sweep (:meth:`sweep_due` would sweep)."""
        return now_ms >= self._next_sweep_ms

    def sweep_due(self, cur: Cursor, now: datetime, *, force: bool) -> None:
        """Sweep, in the transaction of a reservation, once per :attr:`sweep_interval` (or now:
        ``force``), so lapsed leases give their holds back before anyone is refused."""
        now_ms = to_ms(now)
        if force or self.sweep_pending(now_ms):
            self.sweep(cur, now)
            self._next_sweep_ms = now_ms + int(self.sweep_interval.total_seconds() * 1000)

    def sweep(self, cur: Cursor, now: datetime) -> int:
        """Reclaim every reservation whose lease has expired; returns how many."""
        cur.execute(SWEEP_SELECT, (to_ms(now),))
        expired = sorted(map(reservation_row, cur.fetchall()), key=lambda res: res.id)  # lock order
        for res in expired:
            self.settle_windows(cur, res, res.amount_milli, 0)
            self.mark(cur, res, EXPIRED, now, None, res.task_id)
        return len(expired)
