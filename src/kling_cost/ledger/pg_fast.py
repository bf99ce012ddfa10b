"""PostgreSQL's one-round-trip path: the common reserve, commit, release, extend and cache hit
as one statement each (the functions of :mod:`.schema_fast`), the rest on the general path.

The general path (:mod:`.holds`, :mod:`.settle`, the hooks) is a transaction of several
statements, each waiting for the server. Here the ledger prepares, in Python, everything
a function needs and the general path would have decided anyway, then sends one statement:

* for a reservation, the budgets of the scopes as this process last read them (their row
  versions, which the function checks: a changed budget is read again), each one's window
  (key and bounds, from :func:`~kling_cost.budgets.window_at`: the function checks that the
  server's time is inside) and threshold levels (:meth:`~.outbox.AlertOutbox.marks`);
* for a settlement, the reservation's metadata as this process wrote it, and the charge
  columns derived from it (:func:`~.settle.charge_fields`): the function checks the stored
  metadata is the same.

When anything would make the general path do more (a refusal, a crossed threshold, a window
this process has not seen, a sweep due, an idempotency key used before, a lapsed lease, an
overage, metadata to merge, a lease with a sub-millisecond part, a hook other than the two
built-in ones, a reservation made by another process), the function declines or is never
called, and the general path runs: the same rules, just more round trips. Its rows are the
general path's (tests compare them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..budgets import window_at
from ..timestamps import to_ms
from .backend import Conflict, Declined
from .holds import Request
from .models import RESERVED
from .records import RES_COLUMNS, ReservationRow, budget_row, new_id, reservation_row, windows_of
from .schema_fast import FAST_VERSION, SERVER_MS
from .settle import ChargeFields, charge_fields

if TYPE_CHECKING:
    from .hooks import LedgerHook
    from .ledger import Ledger
    from .outbox import AlertOutbox
    from .postgres import PostgresBackend
    from .settle import Settlement

__all__ = ["FastPath", "fast_path"]

_FAR = 1 << 62
"""The bounds of a lifetime window (it has none)."""

_CHARGE_MARKS = "%s::text, %s::text, %s::text, %s::integer, %s::integer, %s::text, %s::text"
_RESERVE = (
    "SELECT kling_reserve(%s::text, %s::text, %s::bigint, %s::text[], %s::text, %s::text, %s::text, "
    "%s::text, %s::text, %s::bigint, %s::bigint, %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], "
    "%s::bigint[], %s::bigint[], %s::text, %s::bigint[], %s::integer[]), now()"
)
_COMMIT = (
    f"SELECT {RES_COLUMNS}, now() FROM kling_commit(%s::text, %s::bigint, %s::text, %s::bigint, "
    f"%s::text, {_CHARGE_MARKS})"
)
_RELEASE = (
    f"SELECT {RES_COLUMNS}, now() FROM kling_release(%s::text, %s::boolean, %s::bigint, %s::text, "
    f"{_CHARGE_MARKS})"
)
_CACHE_HIT = (
    "SELECT kling_cache_hit(%s::text, %s::text, %s::bigint, %s::text[], %s::text, %s::text, %s::text, "
    f"%s::text, %s::text, %s::text, %s::bigint, {_CHARGE_MARKS}), now()"
)
_EXTEND = (
    "UPDATE reservations SET expires_at = "
    f"COALESCE(%s::bigint, {SERVER_MS}) + %s::bigint "
    f"WHERE id = %s::text AND status = 'reserved' RETURNING {RES_COLUMNS}, now()"
)
_BUDGETS = (
    "SELECT id, scope, period, tz, limit_milli, max_per_request_milli, thresholds, unit, xmin::text::bigint "
    "FROM budgets WHERE scope = ANY(%s::text[]) ORDER BY id"
)
_MS = timedelta(milliseconds=1)
_KEEP = 10_000
"""How many held reservations' metadata this process remembers for their settlement (those
settled here are forgotten at once; beyond this, the oldest go: they settle the general way)."""


Window = tuple[str, int, int]
"""A window's key, start and end (milliseconds; a lifetime's are far away)."""


@dataclass(slots=True)
class _Budget:
    """One budget of a scope set, as read (with its row version), and its current window."""

    id: int
    version: int
    period: str
    tz: str
    unit: str
    limit: int
    max_per_request: int | None
    marks: tuple[int, ...]
    current: Window = ("", _FAR, -_FAR)
    """Replaced whole (never field by field): threads share it."""

    def window(self, now: datetime, now_ms: int) -> Window:
        """The window containing ``now`` (kept until it ends)."""
        found = self.current
        if not found[1] <= now_ms < found[2]:
            w = window_at(self.period, self.tz, now)
            start = -_FAR if w.start is None else to_ms(w.start)
            found = (w.key, start, _FAR if w.end is None else to_ms(w.end))
            self.current = found
        return found


class _Budgets:
    """The budgets of one scope set as read, and the function arguments made from them per
    set of windows (they change only when the budgets are read again or a window ends)."""

    __slots__ = ("items", "parts")

    def __init__(self, items: tuple[_Budget, ...]) -> None:
        self.items = items
        self.parts: dict[tuple[Window, ...], tuple[str, ...]] = {}

    def arguments(self, windows: tuple[Window, ...]) -> tuple[str, ...]:
        """ids, versions, limits, window keys, starts, ends, the windows column, threshold
        levels and their budgets (1-based), as PostgreSQL literals."""
        found = self.parts.get(windows)
        if found is None:
            items = self.items
            marks = [mark for b in items for mark in b.marks]
            mark_of = [i for i, b in enumerate(items, 1) for _ in b.marks]
            found = (
                _ints(b.id for b in items),
                _ints(b.version for b in items),
                _ints(b.limit for b in items),
                _texts(w[0] for w in windows),
                _ints(w[1] for w in windows),
                _ints(w[2] for w in windows),
                json.dumps([[b.id, w[0]] for b, w in zip(items, windows, strict=True)]),
                _ints(marks),
                _ints(mark_of),
            )
            if len(self.parts) > 16:
                self.parts.clear()
            self.parts[windows] = found
        return found


def fast_path(
    ledger: Ledger, version: int, settlement: Settlement, in_transaction: threading.local
) -> FastPath | None:
    """The fast path of ``ledger`` when its backend is PostgreSQL with the functions
    installed (schema version :data:`~.schema_fast.FAST_VERSION` or later), else None."""
    backend = ledger.backend
    if backend.dialect != "postgresql" or version < FAST_VERSION:
        return None
    hooks = ledger.hooks
    return FastPath(backend, hooks, ledger.outbox.writer, hooks[1], settlement, in_transaction)  # type: ignore[arg-type]


def _ints(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (cheaper to send than a list psycopg adapts)."""
    return "{" + ",".join(map(str, values)) + "}"


def _texts(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of scopes or window keys (no quote or backslash in them:
    :func:`~kling_cost.budgets.validate_scope`), each quoted (so none reads as NULL)."""
    return "{" + ",".join(f'"{v}"' for v in values) + "}"


class FastPath:
    """The one-statement operations of one PostgreSQL ledger (see the module's text).

    Each method returns None when the general path must run instead (nothing was changed)."""

    def __init__(
        self,
        backend: PostgresBackend,
        hooks: list[LedgerHook],
        outbox: AlertOutbox,
        rollup: LedgerHook,
        settlement: Settlement,
        in_transaction: threading.local,
    ) -> None:
        self.backend = backend
        self._hooks = hooks
        self._outbox = outbox
        self._rollup = rollup
        self._settlement = settlement
        self._in_transaction = in_transaction
        self._budgets: dict[tuple[str, ...], _Budgets] = {}
        self._meta: dict[str, tuple[str, ChargeFields]] = {}
        self._lock = threading.Lock()

    def _usable(self) -> bool:
        """Only the two built-in hooks (what the functions do for them), and no transaction of
        this ledger open in this thread (the general path then refuses to nest)."""
        hooks = self._hooks
        return (
            len(hooks) == 2
            and hooks[0] is self._outbox
            and hooks[1] is self._rollup
            and not getattr(self._in_transaction, "active", False)
        )

    def _noted(self) -> None:
        """A function may have noted a charge for the rollup's fold: the background fold runs."""
        noted = getattr(self._rollup, "noted", None)
        if noted is not None:
            noted()

    def _now(self) -> int | None:
        """The time to decide by: None (the server's) unless a clock was injected."""
        return None if self.backend.server_time else to_ms(self.backend.clock())

    # -- what this process remembers -------------------------------------------------------------

    def _load(self, scopes: tuple[str, ...]) -> _Budgets:
        rows = self.backend.call(_BUDGETS, (list(scopes),))
        budgets = []
        for row in rows:
            b = budget_row(row)
            budgets.append(
                _Budget(
                    b.id,
                    int(row[8]),
                    b.window,
                    b.tz,
                    b.unit,
                    b.limit_milli,
                    b.max_per_request_milli,
                    tuple(level for _label, level in self._outbox.marks(b)),
                )
            )
        found = _Budgets(tuple(budgets))
        with self._lock:
            if len(self._budgets) > 1024:
                self._budgets.clear()
            self._budgets[scopes] = found
        return found

    def remember(self, row: ReservationRow) -> None:
        """Keep a held reservation's metadata (as stored) for its settlement."""
        text = row.metadata_json if row.metadata_json is not None else json.dumps(row.metadata)
        with self._lock:
            if len(self._meta) >= _KEEP:
                self._meta.pop(next(iter(self._meta)))
            self._meta[row.id] = (text, charge_fields(row.metadata))

    def _metadata(self, res_id: str) -> tuple[str, ChargeFields] | None:
        with self._lock:
            return self._meta.get(res_id)

    def _forget(self, res_id: str) -> None:
        with self._lock:
            self._meta.pop(res_id, None)

    # -- the operations ----------------------------------------------------------------------

    def reserve(self, req: Request, ttl: timedelta) -> ReservationRow | None:
        if ttl % _MS or not self._usable():
            return None  # a sub-millisecond lease: the general path floors ``now + ttl``
        now = self.backend.clock()
        now_ms = to_ms(now)
        if self._settlement.sweep_pending(now_ms):
            return None  # the general path sweeps lapsed leases first
        budgets = self._budgets.get(req.scopes)
        if budgets is None:
            budgets = self._load(req.scopes)
        res_id = new_id(now)
        ttl_ms = ttl // _MS
        for attempt in range(2):
            params = self._reserve_params(req, budgets, res_id, ttl_ms, now, now_ms)
            if params is None:
                return None
            try:
                (created, _server_now), *_ = self.backend.call(_RESERVE, params)
            except Conflict:
                return None
            except Declined as declined:
                if declined.stale and attempt == 0:
                    budgets = self._load(req.scopes)
                    now = self.backend.clock()
                    now_ms = to_ms(now)
                    continue
                return None
            row = ReservationRow(
                id=res_id,
                idempotency_key=req.key,
                amount_milli=req.milli,
                status=RESERVED,
                scopes=req.scopes,
                created_at_ms=int(created),
                expires_at_ms=int(created) + ttl_ms,
                metadata=req.meta,
                windows=windows_of(params[17]),
                unit=req.unit,
                catalog=req.catalog,
                catalog_date=req.catalog_date,
                fresh=True,
                metadata_json=req.meta_json,
                scopes_json=req.scopes_json,
            )
            self.remember(row)
            return row
        return None

    def _reserve_params(
        self,
        req: Request,
        budgets: _Budgets,
        res_id: str,
        ttl_ms: int,
        now: datetime,
        now_ms: int,
    ) -> tuple[Any, ...] | None:
        """The function's arguments, or None when the general path must decide (another unit,
        above a per-request maximum or a limit, a window this process has not seen)."""
        milli = req.milli
        windows: list[Window] = []
        for b in budgets.items:
            if b.unit != req.unit or milli > b.limit:
                return None
            if b.max_per_request is not None and milli > b.max_per_request:
                return None
            window = b.window(now, now_ms)
            if not self._outbox.window_known(b.id, window[0]):
                return None
            windows.append(window)
        return (
            res_id,
            req.key,
            milli,
            _texts(req.scopes),
            req.scopes_json,
            req.meta_json,
            req.unit,
            req.catalog,
            req.catalog_date,
            ttl_ms,
            self._now(),
            *budgets.arguments(tuple(windows)),
        )

    def commit(
        self, res_id: str, actual_milli: int | None, task_id: str | None, extra: dict[str, Any]
    ) -> ReservationRow | None:
        if extra or not self._usable():
            return None
        known = self._metadata(res_id)
        if known is None:
            return None
        text, fields = known
        try:
            rows = self.backend.call(
                _COMMIT, (res_id, actual_milli, task_id or None, self._now(), text, *fields)
            )
        except (Declined, Conflict):
            return None
        self._forget(res_id)
        self._noted()
        return reservation_row(rows[0])

    def release(self, res_id: str, failed: bool | None) -> ReservationRow | None:
        if not self._usable():
            return None
        known = self._metadata(res_id)
        text, fields = (None, charge_fields({})) if known is None else known
        try:
            rows = self.backend.call(_RELEASE, (res_id, failed, self._now(), text, *fields))
        except (Declined, Conflict):
            return None
        self._forget(res_id)
        self._noted()
        return reservation_row(rows[0])

    def extend(self, res_id: str, ttl: timedelta) -> ReservationRow | None:
        if ttl % _MS or not self._usable():
            return None
        try:
            rows = self.backend.call(_EXTEND, (self._now(), ttl // _MS, res_id))
        except Conflict:
            return None
        return reservation_row(rows[0]) if rows else None

    def cache_hit(self, req: Request, task_id: str | None) -> bool | None:
        if not self._usable():
            return None
        params = (
            new_id(self.backend.clock()),
            req.key,
            req.milli,
            list(req.scopes),
            req.scopes_json,
            req.meta_json,
            task_id,
            req.unit,
            req.catalog,
            req.catalog_date,
            self._now(),
            *charge_fields(req.meta),
        )
        try:
            (recorded, _server_now), *_ = self.backend.call(_CACHE_HIT, params)
        except (Declined, Conflict):
            return None
        self._noted()
        return bool(recorded)
