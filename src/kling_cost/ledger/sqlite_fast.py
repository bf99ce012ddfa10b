"""SQLite's lean path: the common reserve and commit with the general path's statements and
less Python, everything else on the general path.

On SQLite a statement costs no round trip, but every layer of Python around it costs about
what a statement does. Here the common case runs in one plain write transaction of the
backend (no hooks called, no row objects read back and rebuilt):

* a reservation reuses the budgets it read and decoded last time (budgets, threshold levels,
  window) while the budgets' change counter (``budget_epoch``, kept by triggers: any writer's
  change moves it) is what it was then, checked by the statement that inserts the
  reservation; then it holds the amount on every window, with the general path's statements;
* a settlement moves the reservation row and reads back only the columns that decide the
  charge, compares them with what this process wrote when it reserved (a reservation
  extended or given a task elsewhere still settles here; one revived with other values
  does not), then writes the windows (with the general path's unit check when a budget
  changed since the hold) and the charge as the general path does, the charge left to a
  fold of the report rollup (:mod:`.rollup_mark`) as there.

Whenever the general path would do more (a refusal, a threshold crossed, a window this
process has not seen, a sweep due, an idempotency key used before, another unit, a lapsed
lease, a settlement that raises a window's level, metadata to merge, a hook other than the
two built-in ones, an open transaction of the ledger in this thread, a reservation this
process did not make), the lean transaction rolls back before anything is written to disk
and the general path runs instead: the same rules, the same rows (tests compare them).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from sqlite3 import Connection
from typing import TYPE_CHECKING, Any

from ..timestamps import to_ms
from .backend import Conflict
from .holds import HOLD_WINDOW, INSERT_RESERVATION, Request, held_row
from .models import COMMITTED, RESERVED
from .records import BudgetRow, ReservationRow, budget_row, new_id, windows_json
from .rollup_mark import DEFERRED_VERSION
from .schema_steps import BUDGET_EPOCH
from .settle import INSERT_CHARGE, SETTLE_WINDOW, SUCCEEDED, ChargeFields, charge_fields, charge_params

if TYPE_CHECKING:
    from .holds import Holds
    from .ledger import Ledger
    from .outbox import AlertOutbox
    from .rollup import RollupHook
    from .settle import Settlement
    from .sqlite import SQLiteBackend

__all__ = ["LEAN_VERSION", "SQLiteFastPath", "sqlite_fast_path"]

_KEEP = 10_000
"""How many held reservations this process remembers for their settlement (those settled
here are forgotten at once; beyond this, the oldest go: they settle the general way)."""


_SETTLE = (
    "UPDATE reservations SET status = ?, actual_milli = COALESCE(?, amount_milli), settled_at = ?, "
    "task_id = COALESCE(?, task_id) WHERE id = ? AND status = ? AND expires_at > ? "
    "RETURNING amount_milli, scopes, created_at, windows, metadata, unit, catalog, catalog_date, "
    f"idempotency_key, expires_at, task_id, ({BUDGET_EPOCH})"
)
"""Move a held reservation on a live lease to committed; the first nine columns returned must
be what this process wrote (:attr:`_Held.stored`); the last is the budgets' change counter."""


_SETTLE_WINDOW = (
    "UPDATE budget_windows SET reserved_milli = reserved_milli - ?, used_milli = used_milli + ? "
    "WHERE budget_id = ? AND window_key = ?"
)
"""The general path's :data:`~.settle.SETTLE_WINDOW` without its unit check, while no budget
changed since this path made the hold (:attr:`_Held.epoch`): a budget whose window holds
anything cannot switch unit through the ledger, but the ``sqlite3`` shell can switch it, or
delete the budget and leave its windows behind (foreign keys off); after a change the
settlement takes the general path's statement."""

_INSERT_CHARGE = INSERT_CHARGE.removesuffix(" RETURNING id")
"""The charge row (its id is not needed here: a fold finds it above its watermark)."""


_INSERT_IF_UNCHANGED = INSERT_RESERVATION.replace(" VALUES (", " SELECT ", 1).replace(
    ") ON CONFLICT", f" WHERE ({BUDGET_EPOCH}) = ? ON CONFLICT", 1
)
"""The general path's :data:`~.holds.INSERT_RESERVATION`, only while the budgets' change
counter is what it was when this process read the budgets it reserves on: under the write
lock, in the statement itself, so no budget can change between the check and the holds."""


def _epoch(conn: Connection) -> int | None:
    """The budgets' change counter; None when its row is gone (a ledger wiped in the shell)."""
    row = conn.execute(BUDGET_EPOCH).fetchone()
    return None if row is None else int(row[0])


class _Decline(Exception):
    """The lean transaction left the common case: roll it back, take the general path."""


class _Budgets:
    """The budgets of one scope set as read, with their threshold levels, the budgets' change
    counter then, and per set of windows the reservation's ``windows`` column."""

    __slots__ = ("epoch", "items", "refs")

    def __init__(self, epoch: int, items: tuple[tuple[BudgetRow, tuple[int, ...]], ...]) -> None:
        self.epoch = epoch
        self.items = items
        self.refs: dict[tuple[str, ...], tuple[tuple[tuple[int, str], ...], str]] = {}

    def windows(self, keys: tuple[str, ...]) -> tuple[tuple[tuple[int, str], ...], str]:
        """(budget id, window key) per budget, and as the ``windows`` column stores it."""
        found = self.refs.get(keys)
        if found is None:
            refs = tuple((b.id, key) for (b, _), key in zip(self.items, keys, strict=True))
            found = (refs, windows_json(refs))
            if len(self.refs) > 16:
                self.refs.clear()
            self.refs[keys] = found
        return found


class _Held:
    """A reservation this process made, as it wrote it: what its settlement needs."""

    __slots__ = ("epoch", "fields", "row", "stored")

    def __init__(
        self, row: ReservationRow, stored: tuple[Any, ...], fields: ChargeFields, epoch: int | None
    ) -> None:
        self.row = row
        self.stored = stored
        self.fields = fields
        self.epoch = epoch
        """The budgets' change counter when this path made the hold (None: made elsewhere)."""


LEAN_VERSION = DEFERRED_VERSION
"""The schema version from which SQLite ledgers count budget changes (:mod:`.schema_steps`, 14)
and leave their charges to a fold of the rollup (:mod:`.rollup_mark`, 15)."""


def sqlite_fast_path(
    ledger: Ledger, version: int, holds: Holds, settlement: Settlement, in_transaction: threading.local
) -> SQLiteFastPath | None:
    """The lean path of ``ledger`` when its backend is SQLite at :data:`LEAN_VERSION` or
    later, else None."""
    from .sqlite import SQLiteBackend

    backend = ledger.backend
    if not isinstance(backend, SQLiteBackend) or version < LEAN_VERSION:
        return None
    return SQLiteFastPath(ledger, backend, holds, settlement, in_transaction)


class SQLiteFastPath:
    """The lean reserve and commit of one SQLite ledger (see the module's text).

    Each method returns None when the general path must run instead (nothing was changed)."""

    def __init__(
        self,
        ledger: Ledger,
        backend: SQLiteBackend,
        holds: Holds,
        settlement: Settlement,
        in_transaction: threading.local,
    ) -> None:
        self.backend = backend
        self._hooks = ledger.hooks
        self._outbox: AlertOutbox = ledger.outbox.writer
        self._rollup: RollupHook = ledger.rollup.writer
        self._holds = holds
        self._settlement = settlement
        self._in_transaction = in_transaction
        self._budgets: dict[tuple[str, ...], _Budgets] = {}
        """Scopes -> their budgets as read when the budgets' change counter was at ``epoch``."""
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def _usable(self) -> bool:
        """Only the two built-in hooks (the rollup leaving the charges to a fold), and no
        transaction of this ledger open in this thread (the general path then refuses to nest)."""
        hooks = self._hooks
        return (
            len(hooks) == 2
            and hooks[0] is self._outbox
            and hooks[1] is self._rollup
            and self._rollup.deferred
            and not getattr(self._in_transaction, "active", False)
        )

    # -- what this process remembers -------------------------------------------------------------

    def remember(self, row: ReservationRow, epoch: int | None = None) -> None:
        """Keep a held reservation as written, for its settlement; ``epoch``: the budgets'
        change counter its holds were made at (known only to this path's reservations)."""
        stored = (
            row.amount_milli,
            row.scopes_text(),
            row.created_at_ms,
            windows_json(row.windows),
            row.metadata_text(),
            row.unit,
            row.catalog,
            row.catalog_date,
            row.idempotency_key,
        )
        held = _Held(row, stored, charge_fields(row.metadata), epoch)
        with self._lock:
            if len(self._held) >= _KEEP:
                self._held.pop(next(iter(self._held)))
            self._held[row.id] = held

    def _forget(self, res_id: str) -> _Held | None:
        with self._lock:
            return self._held.pop(res_id, None)

    def _load(self, conn: Connection, scopes: tuple[str, ...]) -> _Budgets:
        """The budgets of ``scopes`` as stored now, decoded, with the budgets' change counter."""
        epoch = _epoch(conn)
        if epoch is None:
            raise _Decline  # no counter: no telling whether they change, the general path reads them
        select = self._holds.budgets_select(len(scopes))
        marks = self._outbox.marks
        found = _Budgets(
            epoch,
            tuple(
                (b, tuple(level for _, level in marks(b)))
                for b in map(budget_row, conn.execute(select, scopes).fetchall())
            ),
        )
        with self._lock:
            if len(self._budgets) > 1024:
                self._budgets.clear()
            self._budgets[scopes] = found
        return found

    # -- the operations ----------------------------------------------------------------------

    def reserve(self, req: Request, ttl: timedelta) -> ReservationRow | None:
        if not self._usable():
            return None
        try:
            row, epoch = self.backend.run_write(self._reserve, req, ttl)
        except (_Decline, Conflict):
            return None
        self.remember(row, epoch)
        return row

    def _reserve(
        self, conn: Connection, now: datetime, req: Request, ttl: timedelta
    ) -> tuple[ReservationRow, int]:
        at = to_ms(now)
        if self._settlement.sweep_pending(at):
            raise _Decline  # the general path sweeps lapsed leases first
        scopes, milli, unit = req.scopes, req.milli, req.unit
        budgets = self._budgets.get(scopes)
        if budgets is None:
            budgets = self._load(conn, scopes)
        window = self._holds.window
        known = self._outbox.window_known
        keys = []
        for b, _ in budgets.items:
            if b.unit != unit or milli > b.limit_milli:
                raise _Decline  # a unit mismatch or a refusal: the general path's errors
            mpr = b.max_per_request_milli
            if mpr is not None and milli > mpr:
                raise _Decline
            key = window(b, now).key
            if not known(b.id, key):
                raise _Decline  # the outbox clears the alerts of the windows before it
            keys.append(key)
        refs, refs_json = budgets.windows(tuple(keys))
        res_id = new_id(now, at)
        expires = to_ms(now + ttl)
        inserted = conn.execute(
            _INSERT_IF_UNCHANGED,
            (
                res_id,
                req.key,
                milli,
                RESERVED,
                req.scopes_json,
                at,
                expires,
                refs_json,
                req.meta_json,
                unit,
                req.catalog,
                req.catalog_date,
                budgets.epoch,
            ),
        )
        if inserted.rowcount != 1:
            if _epoch(conn) != budgets.epoch:
                with self._lock:
                    self._budgets.pop(scopes, None)  # read them again next time
            raise _Decline  # budgets changed, or the key was used before: the general path
        for (b, levels), (_, wkey) in zip(budgets.items, refs, strict=True):
            counters = conn.execute(HOLD_WINDOW, (b.id, wkey, milli, b.limit_milli)).fetchone()
            if counters is None:
                raise _Decline  # refused: the general path records the refusal and says why
            after = counters[0] + counters[1]
            before = after - milli
            for level in levels:
                if before < level <= after:
                    raise _Decline  # a threshold crossed: the general path writes its alert
        row = held_row(res_id, req, at, expires, refs)
        return row, budgets.epoch

    def commit(
        self, res_id: str, actual_milli: int | None, task_id: str | None, extra: dict[str, Any]
    ) -> ReservationRow | None:
        if extra or not self._usable():
            return None
        with self._lock:
            held = self._held.get(res_id)
        if held is None or (actual_milli is not None and actual_milli > held.row.amount_milli):
            return None  # not made here, or a rise: the general path checks overage and thresholds
        try:
            settled = self.backend.run_write(self._commit, held, actual_milli, task_id)
        except (_Decline, Conflict):
            return None
        self._forget(res_id)
        noted = self._rollup.noted
        if noted is not None:
            noted()  # the background fold runs (the general path's hook calls it too)
        return settled

    def _commit(
        self, conn: Connection, now: datetime, held: _Held, actual_milli: int | None, task_id: str | None
    ) -> ReservationRow:
        res = held.row
        at = to_ms(now)
        row = conn.execute(
            _SETTLE, (COMMITTED, actual_milli, at, task_id or None, res.id, RESERVED, at)
        ).fetchone()
        if row is None or row[:9] != held.stored:
            raise _Decline  # settled, lapsed, revived or changed elsewhere: the general path
        amount = res.amount_milli
        spent = amount if actual_milli is None else actual_milli
        unit = res.unit
        if held.epoch is not None and row[11] == held.epoch:
            for budget_id, window_key in res.windows:
                conn.execute(_SETTLE_WINDOW, (amount, spent, budget_id, window_key))
        else:  # a budget changed since the hold (or it was made elsewhere): the unit checked
            for budget_id, window_key in res.windows:
                conn.execute(
                    SETTLE_WINDOW, (amount, budget_id, unit, spent, budget_id, window_key, budget_id)
                ).fetchone()
        final_task = row[10]
        meta_text = row[4]  # the remembered row's own (compared above), as are its scopes
        fields = held.fields
        conn.execute(_INSERT_CHARGE, charge_params(res, SUCCEEDED, at, spent, final_task, fields, 0, 1))
        return ReservationRow(
            res.id,
            res.idempotency_key,
            amount,
            COMMITTED,
            res.scopes,
            res.created_at_ms,
            int(row[9]),
            spent,
            at,
            final_task,
            {} if meta_text == "{}" else json.loads(meta_text),  # the caller's own copy, as stored
            res.windows,
            unit,
            res.catalog,
            res.catalog_date,
            False,
            False,
            meta_text,
            row[1],
        )

    def release(self, res_id: str, failed: bool | None) -> ReservationRow | None:
        """Releases take the general path (they are rare next to commits)."""
        self._forget(res_id)
        return None

    def extend(self, res_id: str, ttl: timedelta) -> ReservationRow | None:
        """Extensions take the general path; the settlement reads the new expiry back."""
        return None

    def cache_hit(self, req: Request, task_id: str | None) -> bool | None:
        """Cache hits take the general path."""
        return None
