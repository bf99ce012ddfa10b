"""The :class:`Ledger`: budgets and two-phase charging, over a backend, with its stores.

Every operation that changes money is one transaction of :meth:`Ledger.transaction`: the
ledger checks the call and converts amounts to thousandths (and back) here, at its edge; the
body is a step of a part (:mod:`.holds`, :mod:`.settle`, :mod:`.limits`), in thousandths
throughout, with the hooks (:mod:`.hooks`) inside the same transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Self

from ..budgets import DEFAULT_UNIT, Budget, Usage, validate_scope, validate_window
from ..errors import StorageError, ValidationError
from ..money import storage_amount
from ..text import clean_text
from . import schema
from .backend import RETRIES, AfterCommit, Backend, Conflict, Cursor, retrying
from .cache_store import CacheCalls, RequestCache
from .holds import Holds, Refused, check_ttl, exceeded, request
from .hooks import LedgerHook
from .limits import Limits, budget_request
from .models import RESERVED, AlertRecord, Charge, PromptCost, Reservation
from .outbox_store import OutboxStore
from .pg_fast import FastPath, fast_path
from .proxy_store import ProxyStore
from .queries import Queries
from .records import ReservationRow, clean_metadata, reservation_id_of, text_or_none
from .relay_store import RelayStore
from .rollup_fold import FOLD_INTERVAL, check_fold_interval
from .rollup_store import RollupStore
from .runs_store import RunStore
from .settle import Settlement
from .sqlite_fast import SQLiteFastPath, sqlite_fast_path

__all__ = ["DEFAULT_TTL", "Ledger"]

DEFAULT_TTL = timedelta(minutes=30)
"""How long a reservation is held when the caller gives no ``ttl``."""


class Ledger(CacheCalls):
    """Budgets and two-phase charging. Open one with :func:`kling_cost.open_ledger`, or build
    one over a ready backend: ``Ledger(SQLiteBackend("sqlite:///credits.db"))``. It has a
    :attr:`backend` and stores sharing its :meth:`transaction`: :attr:`cache`, :attr:`outbox`,
    :attr:`rollup`, :attr:`queries`, :attr:`proxy`, :attr:`relays`, :attr:`runs`."""

    def __init__(
        self,
        backend: Backend,
        *,
        default_ttl: timedelta = DEFAULT_TTL,
        sweep_interval: timedelta = timedelta(seconds=1),
        fold_interval: float | None = FOLD_INTERVAL,
    ) -> None:
        fold_interval = check_fold_interval(fold_interval)
        self.backend = backend
        self.url = backend.url
        self.clock = backend.clock
        """The time the ledger decides by (an injected clock, or the database server's)."""
        self.default_ttl = default_ttl
        self._in_transaction = threading.local()
        self.outbox = OutboxStore(self)
        self.rollup = RollupStore(self, fold_interval)
        self.cache = RequestCache(self)
        self.queries = Queries(self)
        self.proxy = ProxyStore(self)
        self.relays = RelayStore(self)
        self.runs = RunStore(self)
        self._hooks: list[LedgerHook] = [self.outbox.writer, self.rollup.writer]
        self._holds = Holds(backend, self._hooks)
        self._settle = Settlement(backend, self._hooks, sweep_interval)
        self._limits = Limits(backend, self._hooks, self.outbox.writer)
        try:
            version = self.migrate()
        except BaseException:
            backend.close()  # no connections or pool threads left behind by a ledger that never opened
            raise
        self._settle.rollup_deferred = int(self.rollup.defer(version))
        self._fast: FastPath | SQLiteFastPath | None = fast_path(
            self, version, self._settle, self._in_transaction
        ) or sqlite_fast_path(self, version, self._holds, self._settle, self._in_transaction)

    @property
    def hooks(self) -> list[LedgerHook]:
        """Called inside the ledger's own transactions (alert outbox, report rollups); append
        your own (see :class:`~.hooks.LedgerHook`)."""
        return self._hooks

    # -- the seam ------------------------------------------------------------------------------

    def transaction(
        self, *, snapshot: bool = False, wait: float | None = None
    ) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction, committed when the block ends, rolled back when it
        raises: the one way into the ledger's tables, for its parts and stores alike.
        ``?`` placeholders on every backend; ``cur.now`` is the time the transaction decides
        by. Driver errors raise :class:`~kling_cost.errors.StorageError`, a lost race
        :class:`~.backend.Conflict` (:func:`~.backend.retrying` runs the block again). After
        the commit the outbox wakes its listeners if the transaction wrote an alert. They do
        not nest: a ledger method called in the block (or by a hook) raises StorageError.
        ``snapshot=True``: read only, one consistent state for the whole block (a copy).
        ``wait``: see :meth:`.Backend.transaction`."""
        inner = self.backend.transaction(snapshot=snapshot, wait=wait)
        return AfterCommit(inner, self.outbox.after_commit, self._in_transaction)

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version. Safe to run concurrently.
        A ledger already at this version is only read: opening one takes no write lock."""
        try:
            with self.transaction(snapshot=True) as cur:
                cur.execute("SELECT MAX(version) FROM schema_version")
                found = cur.fetchone()[0]
        except StorageError:
            found = None  # no schema yet; anything else, the migration below reports
        if found is not None and int(found) == schema.MIGRATIONS[-1][0]:
            return int(found)
        with self.transaction() as cur:
            return schema.migrate(cur, self.backend)

    def close(self) -> None:
        """Release connections. The ledger can not be used afterwards."""
        try:
            self.rollup.close()
        finally:
            self.backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.url}>"

    # -- budgets -------------------------------------------------------------------------------

    def set_budget(
        self,
        scope: str,
        limit: Decimal | int | str,
        window: str = "day",
        *,
        tz: str = "UTC",
        thresholds: Iterable[Decimal | str | int] | None = None,
        max_per_request: Decimal | int | str | None = None,
        unit: str | None = None,
        alerts: bool = True,
    ) -> Budget:
        """Create or update the ``window`` budget of ``scope``; a new limit applies at once.

        ``unit`` is what the limit counts: ``units`` (Kling's API units, the default for a new
        budget) or ``credits`` (the app's). ``None`` keeps an existing budget's unit. A budget
        whose windows hold or have used anything cannot change its unit (delete it first).
        ``thresholds``: fractions of the limit that alert when crossed (``None``: ``0.5, 0.8,
        1``; an empty list is refused). ``alerts=False`` gives the budget no threshold alerts
        (a refused reservation still alerts).
        """
        wanted = budget_request(scope, limit, window, tz, thresholds, max_per_request, unit, alerts)

        def run() -> Budget:
            with self.transaction() as cur:
                row = self._limits.set(cur, wanted)
            return row.to_budget()

        return retrying(run)

    def delete_budget(self, scope: str, window: str) -> bool:
        """Remove a budget and its window counters; charges stay. True if one was deleted."""
        window, scope = validate_window(window), validate_scope(scope)

        def run() -> bool:
            with self.transaction() as cur:
                return self._limits.delete(cur, scope, window)

        return retrying(run)

    def budgets(self, scope: str | None = None) -> list[Budget]:
        """:meth:`.Queries.budgets`: every budget, or those of one scope, in a stable order."""
        return self.queries.budgets(scope)

    def get_budget(self, scope: str, window: str) -> Budget | None:
        """:meth:`.Queries.get_budget`: the ``window`` budget of ``scope``, if it has one."""
        return self.queries.get_budget(scope, window)

    def usage(self, scope: str, window: str | None = None, *, at: datetime | None = None) -> Usage:
        """:meth:`.Queries.usage`: limit, used, reserved and remaining of one budget at ``at``."""
        return self.queries.usage(scope, window, at=at)

    def usages(self, scope: str | None = None, *, at: datetime | None = None) -> list[Usage]:
        """:meth:`.Queries.usages`: the usage of every budget (or of one scope's) at ``at``."""
        return self.queries.usages(scope, at=at)

    # -- reserve -------------------------------------------------------------------------------

    def reserve(
        self,
        amount: Decimal | int | str,
        scopes: Iterable[str] | str = (),
        *,
        idempotency_key: str | None = None,
        ttl: timedelta | None = None,
        metadata: Mapping[str, Any] | None = None,
        unit: str = DEFAULT_UNIT,
        catalog: str | None = None,
        catalog_date: str | None = None,
    ) -> Reservation:
        """Hold ``amount`` on every budget of every scope (and ``account``), all or nothing.

        ``amount`` counts ``unit`` (``units`` or ``credits``); ``catalog`` and ``catalog_date``
        record what priced it (name, entry date), so settling never guesses the unit.
        Returns the reservation, or the existing one for a repeated ``idempotency_key`` with
        the same amount and scopes. Raises :class:`IdempotencyConflict` (nothing reserved)
        when the key was used for a different request, unless that one was released or
        expired before Kling accepted a task (then the key is reserved again, ``revived``).
        Raises :class:`BudgetExceeded` (nothing reserved) when any budget lacks room or the
        amount is above a budget's ``max_per_request``, and :class:`UnitMismatch` (nothing
        reserved) when a budget of these scopes counts another unit.
        """
        req = request(amount, scopes, idempotency_key, metadata, unit, catalog, catalog_date)
        lease = check_ttl(ttl if ttl is not None else self.default_ttl)
        if self._fast is not None and (done := self._fast.reserve(req, lease)) is not None:
            return done.to_reservation()
        for attempt in range(RETRIES):
            try:
                with self.transaction() as cur:
                    self._settle.sweep_due(cur, cur.now, force=attempt > 0)
                    row = self._holds.reserve(cur, cur.now, req, lease)
                if self._fast is not None and row.status == RESERVED:
                    self._fast.remember(row)  # its commit may still take one round trip
                return row.to_reservation()
            except Conflict:
                continue
            except Refused as refused:
                if attempt == 0 and self._has_expired():
                    continue  # a lapsed lease may free the room: sweep (forced) and try again
                if self._hooks:
                    with self.transaction() as cur:
                        self._holds.record_refusal(cur, refused.refusal, req.scopes)
                raise exceeded(refused.refusal) from None
        raise StorageError("the reservation kept conflicting with concurrent writers; try again")

    def reserve_unchecked(
        self,
        amount: Decimal | int | str,
        scopes: Iterable[str] | str = (),
        *,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unit: str = DEFAULT_UNIT,
        catalog: str | None = None,
        catalog_date: str | None = None,
    ) -> Reservation:
        """A reservation that no limit can refuse (for :meth:`charge` only); units still must match."""
        req = request(amount, scopes, idempotency_key, metadata, unit, catalog, catalog_date)

        def run() -> ReservationRow:
            with self.transaction() as cur:
                return self._holds.reserve(cur, cur.now, req, self.default_ttl, enforce=False)

        return retrying(run).to_reservation()

    def _has_expired(self) -> bool:
        with self.transaction(snapshot=True) as cur:
            return self._settle.has_expired(cur)

    # -- settle --------------------------------------------------------------------------------

    def commit(
        self,
        reservation: Reservation | str,
        actual: Decimal | int | str | None = None,
        *,
        task_id: str | None = None,
        force: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Settle a reservation with what was actually charged (default: the reserved amount).

        ``metadata`` is merged into the reservation's and recorded on the charge.

        Committing twice is a no-op that returns the settled reservation. Committing a
        released one, or an expired one, raises :class:`ReservationError`; ``force=True``
        records a charge that really happened after the lease expired (it counts as used,
        even beyond the limit: actuals win).

        A commit that takes a budget window past its limit (an actual above the estimate, a
        forced charge) is never silent: the charge records its ``overage`` and the window
        gets one ``overage`` alert.
        """
        res_id = reservation_id_of(reservation)
        actual_milli = None if actual is None else storage_amount(actual, what="actual", allow_zero=True)
        extra = clean_metadata(metadata)
        task = text_or_none(task_id)
        fast = self._fast
        if fast is not None and (done := fast.commit(res_id, actual_milli, task, extra)) is not None:
            return done.to_reservation()

        def run() -> ReservationRow:
            with self.transaction() as cur:
                return self._settle.commit_id(cur, cur.now, res_id, actual_milli, task, force, extra)

        return retrying(run).to_reservation()

    def release(self, reservation: Reservation | str, *, failed: bool | None = None) -> Reservation:
        """Free a reservation's credits (the request failed or was never sent).

        A reservation with a Kling task attached (or ``failed=True``) is recorded as a failed
        generation: a charge row of 0 (Kling does not charge failed tasks). Releasing twice,
        or releasing an expired reservation, is a no-op that returns it; releasing a
        committed one raises :class:`ReservationError`.
        """
        res_id = reservation_id_of(reservation)
        if self._fast is not None and (done := self._fast.release(res_id, failed)) is not None:
            return done.to_reservation()

        def run() -> ReservationRow:
            with self.transaction() as cur:
                return self._settle.release(cur, cur.now, self._settle.locked(cur, res_id), failed)

        return retrying(run).to_reservation()

    def charge(
        self,
        amount: Decimal | int | str,
        scopes: Iterable[str] | str = (),
        *,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unit: str = DEFAULT_UNIT,
        catalog: str | None = None,
        catalog_date: str | None = None,
    ) -> Reservation:
        """Record money already spent, without a reservation (it counts even beyond a limit:
        actuals win). For usage that happened outside the two-phase flow. A repeated
        ``idempotency_key`` follows :meth:`reserve`'s rule (the same charge is recorded once;
        another amount, unit or other scopes raise :class:`IdempotencyConflict`). ``unit`` must be
        the unit of every budget of ``scopes`` (:class:`UnitMismatch` otherwise)."""
        req = request(amount, scopes, idempotency_key, metadata, unit, catalog, catalog_date)
        task = text_or_none(task_id)

        def run() -> ReservationRow:
            # One transaction: the hold and its commit happen together or not at all.
            with self.transaction() as cur:
                now = cur.now
                res = self._holds.reserve(cur, now, req, self.default_ttl, enforce=False)
                if res.status != RESERVED:
                    return res
                current = self._settle.locked(cur, res.id)
                # A hold made just now lifted the level by the whole amount (for the overage).
                rise = req.milli if res.fresh else None
                return self._settle.commit(cur, now, current, req.milli, task, False, {}, rise=rise)

        return retrying(run).to_reservation()

    def record_cache_hit(
        self,
        saved: Decimal | int | str,
        scopes: Iterable[str] | str = (),
        *,
        idempotency_key: str | None = None,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unit: str = DEFAULT_UNIT,
        catalog: str | None = None,
        catalog_date: str | None = None,
    ) -> bool:
        """Record a request served from the dedup cache: nothing charged, ``saved`` (in
        ``unit``) not spent.

        With ``idempotency_key``, the hit is recorded once (a reservation row with status
        ``cached`` holds the key); returns False when it was recorded before, and raises
        :class:`IdempotencyConflict` when the key names a different request.
        """
        req = request(saved, scopes, idempotency_key, metadata, unit, catalog, catalog_date, saved=True)
        task = text_or_none(task_id)
        if self._fast is not None and (hit := self._fast.cache_hit(req, task)) is not None:
            return hit

        def run() -> bool:
            with self.transaction() as cur:
                return self._settle.record_cache_hit(cur, cur.now, req, task)

        return retrying(run)

    # -- leases --------------------------------------------------------------------------------

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
        task = clean_text(task_id)
        lease = None if ttl is None else check_ttl(ttl)
        extra = clean_metadata(metadata)

        def run() -> ReservationRow:
            with self.transaction() as cur:
                return self._settle.attach_task(cur, cur.now, res_id, task, extra, lease)

        row = retrying(run)
        if self._fast is not None and row.status == RESERVED:
            self._fast.remember(row)  # its commit may still take one round trip
        return row.to_reservation()

    def extend(self, reservation: Reservation | str, ttl: timedelta) -> Reservation:
        """Push a reservation's lease to ``now + ttl`` (for tasks that run long). Works while
        it is still held, even if its lease lapsed and no sweep has reclaimed it yet."""
        res_id, lease = reservation_id_of(reservation), check_ttl(ttl)
        if self._fast is not None and (done := self._fast.extend(res_id, lease)) is not None:
            return done.to_reservation()
        with self.transaction() as cur:
            row = self._settle.extend(cur, cur.now, res_id, lease)
        return row.to_reservation()

    def sweep(self) -> int:
        """Reclaim every reservation whose lease has expired; returns how many."""

        def run() -> int:
            with self.transaction() as cur:
                return self._settle.sweep(cur, cur.now)

        return retrying(run)

    # -- the stores, where callers reach them through the ledger -------------------------------

    def get_reservation(self, ref: str) -> Reservation | None:
        """:meth:`.Queries.get_reservation`: a reservation by id or by idempotency key."""
        return self.queries.get_reservation(ref)

    def reservation_for_task(self, task_id: str) -> Reservation | None:
        """:meth:`.Queries.reservation_for_task`: the reservation a Kling task was attached to."""
        return self.queries.reservation_for_task(task_id)

    def reservations(
        self, status: str | None = None, limit: int | None = 1000, *, since: datetime | None = None
    ) -> list[Reservation]:
        """:meth:`.Queries.reservations`: reservations, newest first."""
        return self.queries.reservations(status, limit, since=since)

    def charges(
        self,
        scope: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        over_limit: bool = False,
    ) -> list[Charge]:
        """:meth:`.Queries.charges`: settled charges, oldest first."""
        return self.queries.charges(scope, since=since, until=until, limit=limit, over_limit=over_limit)

    def prompt_costs(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        scope: str | None = None,
        limit: int = 5,
    ) -> list[PromptCost]:
        """:meth:`.Queries.prompt_costs`: the costliest prompts of a period, per unit."""
        return self.queries.prompt_costs(since=since, until=until, scope=scope, limit=limit)

    def totals(self) -> dict[str, dict[str, Decimal]]:
        """:meth:`.Queries.totals`: charged and held sums per unit over the whole ledger."""
        return self.queries.totals()

    def alerts(
        self,
        *,
        status: str | None = None,
        scope: str | None = None,
        include_cleared: bool = True,
        limit: int = 500,
    ) -> list[AlertRecord]:
        """:meth:`.OutboxStore.alerts`: alerts from the outbox, newest first."""
        return self.outbox.alerts(status=status, scope=scope, include_cleared=include_cleared, limit=limit)
