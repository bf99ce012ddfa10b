"""The ledger: budgets, two-phase charging and queries, over any SQL backend.

Every operation that changes money is one transaction. Backends supply a connection
and a transaction (``_transaction``) and translate their driver's errors; the SQL here
uses ``?`` placeholders and runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Protocol, TypeVar

from ..budgets import (
    Budget,
    Usage,
    normalise_scopes,
    parse_limit,
    parse_thresholds,
    validate_scope,
    validate_tz,
    validate_window,
    window_at,
)
from ..errors import BudgetExceeded, ReservationError, StorageError, ValidationError
from ..money import format_amount, from_storage, parse_amount, to_storage
from .models import COMMITTED, EXPIRED, RELEASED, RESERVED, Charge, Reservation
from .schema import MIGRATIONS

__all__ = ["Clock", "Cursor", "Ledger"]

Clock = Callable[[], datetime]
T = TypeVar("T")

DEFAULT_TTL = timedelta(minutes=30)
MAX_KEY = 200
PREVIEW = 100


class Cursor(Protocol):
    """The part of a DB-API cursor the ledger uses (qmark placeholders)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Conflict(Exception):
    """A concurrent transaction won (unique key, deadlock, serialization): retry the operation."""


RETRIES = 8


class _Refused(Exception):
    def __init__(self, error: BudgetExceeded) -> None:
        self.error = error


def _utc_now() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(at: datetime) -> int:
    """Aware datetime -> integer milliseconds since the epoch (exact, no float)."""
    if at.tzinfo is None:
        raise ValidationError("times must be timezone-aware")
    return (at - _EPOCH) // _MS


def _dt(ms: int) -> datetime:
    return _EPOCH + ms * _MS


class Ledger(ABC):
    """Budgets and two-phase charging. Open one with :func:`kling_cost.open_ledger`."""

    schemes: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[Ledger]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            Ledger.registry[scheme] = cls

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        default_ttl: timedelta = DEFAULT_TTL,
        sweep_interval: timedelta = timedelta(seconds=1),
    ) -> None:
        self.url = url
        self.clock: Clock = clock or _utc_now
        self.default_ttl = default_ttl
        self.sweep_interval = sweep_interval
        self._next_sweep_ms = 0

    # -- backend hooks -------------------------------------------------------------------

    url: str
    id_column: ClassVar[str] = "INTEGER PRIMARY KEY"
    without_rowid: ClassVar[str] = ""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor inside one write transaction: committed on success, rolled back on error.

        Driver errors become :class:`StorageError`; a unique-constraint violation becomes
        :class:`Conflict` so the caller can retry.
        """

    def _lock_reservation_sql(self) -> str:
        return ""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The ledger can not be used afterwards."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version. Safe to run concurrently."""
        with self._transaction() as cur:
            self._lock_schema(cur)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    cur.execute(
                        statement.replace("{id}", self.id_column).replace(
                            "{without_rowid}", self.without_rowid
                        )
                    )
                cur.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _ms(self.clock())),
                )
                current = version
            return int(current)

    def _after_bulk_insert(self, cur: Cursor, table: str, column: str) -> None:  # noqa: B027
        """Let identity sequences continue after rows were inserted with explicit ids."""

    def _lock_schema(self, cur: Cursor) -> None:  # noqa: B027 - optional hook
        """Serialise concurrent migrations (SQLite's BEGIN IMMEDIATE already does)."""

    # -- budgets ---------------------------------------------------------------------------

    def set_budget(
        self,
        scope: str,
        limit: Decimal | int | str,
        window: str = "day",
        *,
        tz: str = "UTC",
        thresholds: Iterable[Decimal | str | int] | None = None,
        max_per_request: Decimal | int | str | None = None,
    ) -> Budget:
        """Create or update the ``window`` budget of ``scope``; a new limit applies at once."""
        scope = validate_scope(scope)
        window = validate_window(window)
        lim = parse_limit(limit)
        tz = validate_tz(tz)
        marks = parse_thresholds(thresholds)
        mpr = None if max_per_request is None else parse_limit(max_per_request, "max_per_request")
        now = _ms(self.clock())
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO budgets (scope, period, tz, limit_milli, max_per_request_milli, "
                "thresholds, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, period) DO UPDATE SET tz = excluded.tz, "
                "limit_milli = excluded.limit_milli, "
                "max_per_request_milli = excluded.max_per_request_milli, "
                "thresholds = excluded.thresholds, updated_at = excluded.updated_at",
                (
                    scope,
                    window,
                    tz,
                    to_storage(lim),
                    None if mpr is None else to_storage(mpr),
                    json.dumps([str(t) for t in marks]),
                    now,
                    now,
                ),
            )
            cur.execute(_BUDGET_SELECT + " WHERE scope = ? AND period = ?", (scope, window))
            return _budget(cur.fetchone())

    def budgets(self, scope: str | None = None) -> list[Budget]:
        """Every budget, or those of one scope, in a stable order."""
        with self._transaction() as cur:
            if scope is None:
                cur.execute(_BUDGET_SELECT + " ORDER BY scope, id")
            else:
                cur.execute(_BUDGET_SELECT + " WHERE scope = ? ORDER BY id", (validate_scope(scope),))
            return [_budget(row) for row in cur.fetchall()]

    def get_budget(self, scope: str, window: str) -> Budget | None:
        window = validate_window(window)
        with self._transaction() as cur:
            cur.execute(_BUDGET_SELECT + " WHERE scope = ? AND period = ?", (validate_scope(scope), window))
            row = cur.fetchone()
            return None if row is None else _budget(row)

    def delete_budget(self, scope: str, window: str) -> bool:
        """Remove a budget and its window counters; charges stay. True if one was deleted."""
        window = validate_window(window)
        with self._transaction() as cur:
            cur.execute(
                "SELECT id FROM budgets WHERE scope = ? AND period = ?", (validate_scope(scope), window)
            )
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute("DELETE FROM budget_windows WHERE budget_id = ?", (row[0],))
            cur.execute("DELETE FROM budgets WHERE id = ?", (row[0],))
            return True

    # -- two-phase charging ----------------------------------------------------------------

    def reserve(
        self,
        amount: Decimal | int | str,
        scopes: Iterable[str] | str = (),
        *,
        idempotency_key: str | None = None,
        ttl: timedelta | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Hold ``amount`` on every budget of every scope (and ``account``), all or nothing.

        Returns the reservation, or the existing one for a repeated ``idempotency_key``.
        Raises :class:`BudgetExceeded` (nothing reserved) when any budget lacks room or the
        amount is above a budget's ``max_per_request``.
        """
        amt = parse_amount(amount, what="amount")
        milli = to_storage(amt)
        scope_list = normalise_scopes(list(scopes) if not isinstance(scopes, str) else scopes)
        lease = ttl if ttl is not None else self.default_ttl
        if not isinstance(lease, timedelta) or lease <= timedelta(0):
            raise ValidationError(f"ttl must be a positive timedelta, not {lease!r}")
        key = _check_key(idempotency_key) if idempotency_key is not None else None
        meta = _clean_metadata(metadata)
        for attempt in range(RETRIES):
            now = self.clock()
            try:
                with self._transaction() as cur:
                    self._sweep_due(cur, now, force=attempt > 0)
                    return self._reserve(cur, now, milli, scope_list, key, lease, meta)
            except Conflict:
                continue
            except _Refused as refused:
                if attempt == 0 and self._has_expired(now):
                    continue
                raise refused.error from None
        raise StorageError("the reservation kept conflicting with concurrent writers; try again")

    def _reserve(
        self,
        cur: Cursor,
        now: datetime,
        milli: int,
        scopes: tuple[str, ...],
        key: str | None,
        ttl: timedelta,
        meta: dict[str, Any],
    ) -> Reservation:
        marks = ",".join("?" * len(scopes))
        cur.execute(_BUDGET_SELECT + f" WHERE scope IN ({marks}) ORDER BY id", scopes)
        budgets = [_budget(row) for row in cur.fetchall()]
        windows = [(b, window_at(b.window, b.tz, now)) for b in budgets]
        refs = tuple((b.id, w.key) for b, w in windows)
        res_id = _new_id(now)
        created = _ms(now)
        expires = _ms(now + ttl)
        cur.execute(
            "INSERT INTO reservations (id, idempotency_key, amount_milli, status, scopes, "
            "created_at, expires_at, windows, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            (
                res_id,
                key,
                milli,
                RESERVED,
                json.dumps(scopes),
                created,
                expires,
                json.dumps(refs),
                json.dumps(meta),
            ),
        )
        if cur.rowcount != 1:
            if key is None:
                raise Conflict(f"reservation id {res_id} collided")
            existing = self._reservation_by(cur, "idempotency_key", key)  # reserved before
            if existing is None:
                raise Conflict(f"idempotency key {key!r} vanished while reserving")
            return existing  # holds nothing new
        amount = from_storage(milli)
        for b in budgets:
            if b.max_per_request is not None and amount > b.max_per_request:
                raise _Refused(
                    BudgetExceeded(
                        f"Request of {format_amount(amount)} exceeds the per-request maximum of "
                        f"{format_amount(b.max_per_request)} on {b.scope} ({b.window} budget)",
                        scope=b.scope,
                        window=b.window,
                        requested=amount,
                        available=b.max_per_request,
                        limit=b.limit,
                        reason="max_per_request",
                    )
                )
        for b, w in windows:
            limit = to_storage(b.limit)
            if milli <= limit:
                cur.execute(
                    "INSERT INTO budget_windows (budget_id, window_key, used_milli, reserved_milli) "
                    "VALUES (?, ?, 0, ?) ON CONFLICT (budget_id, window_key) DO UPDATE "
                    "SET reserved_milli = budget_windows.reserved_milli + excluded.reserved_milli "
                    "WHERE budget_windows.used_milli + budget_windows.reserved_milli "
                    "+ excluded.reserved_milli <= ?",
                    (b.id, w.key, milli, limit),
                )
            if milli > limit or cur.rowcount != 1:
                cur.execute(
                    "SELECT used_milli, reserved_milli FROM budget_windows "
                    "WHERE budget_id = ? AND window_key = ?",
                    (b.id, w.key),
                )
                used, reserved = cur.fetchone() or (0, 0)
                available = from_storage(max(0, limit - used - reserved))
                raise _Refused(
                    BudgetExceeded(
                        f"{b.window.capitalize()} budget exceeded on {b.scope}: "
                        f"{format_amount(from_storage(used + reserved))} + {format_amount(amount)} "
                        f"> {format_amount(b.limit)} ({w.key}; "
                        f"{format_amount(available)} available)",
                        scope=b.scope,
                        window=b.window,
                        requested=amount,
                        available=available,
                        limit=b.limit,
                    )
                )
        return Reservation(
            id=res_id,
            idempotency_key=key or res_id,
            amount=amount,
            status=RESERVED,
            scopes=scopes,
            created_at=_dt(created),
            expires_at=_dt(expires),
            metadata=meta,
            windows=refs,
        )

    def commit(
        self,
        reservation: Reservation | str,
        actual: Decimal | int | str | None = None,
        *,
        task_id: str | None = None,
        force: bool = False,
    ) -> Reservation:
        """Settle a reservation with what was actually charged (default: the reserved amount).

        Committing twice is a no-op that returns the settled reservation. Committing a
        released one, or an expired one, raises :class:`ReservationError`; ``force=True``
        records a charge that really happened after the lease expired (it counts as used,
        even beyond the limit: actuals win).
        """
        res_id = _reservation_id(reservation)
        actual_milli = (
            None if actual is None else to_storage(parse_amount(actual, what="actual", allow_zero=True))
        )
        return self._retrying(lambda: self._commit(res_id, actual_milli, task_id, force))

    def _commit(self, res_id: str, actual_milli: int | None, task_id: str | None, force: bool) -> Reservation:
        now = self.clock()
        with self._transaction() as cur:
            current = self._locked(cur, res_id)
            if current.status == COMMITTED:
                return current
            if current.status == RELEASED:
                raise ReservationError(f"reservation {res_id} was released; it cannot be committed")
            lapsed = current.status == EXPIRED or current.expires_at <= now
            if lapsed and not force:
                raise ReservationError(
                    f"reservation {res_id} expired at {current.expires_at.isoformat()} and its "
                    "credits were reclaimed; commit with force=True to record a charge Kling made anyway"
                )
            amount_milli = to_storage(current.amount)
            spent = amount_milli if actual_milli is None else actual_milli
            held = 0 if current.status == EXPIRED else amount_milli
            for budget_id, window_key in current.windows:
                cur.execute(
                    "UPDATE budget_windows SET reserved_milli = reserved_milli - ?, "
                    "used_milli = used_milli + ? WHERE budget_id = ? AND window_key = ?",
                    (held, spent, budget_id, window_key),
                )
            settled = _ms(now)
            final_task = task_id or current.task_id
            cur.execute(
                "UPDATE reservations SET status = ?, actual_milli = ?, settled_at = ?, task_id = ? "
                "WHERE id = ? AND status = ?",
                (COMMITTED, spent, settled, final_task, res_id, current.status),
            )
            if cur.rowcount != 1:  # settled concurrently: retry and report the settled state
                raise Conflict(f"reservation {res_id} changed while committing")
            self._insert_charge(cur, current, spent, settled, final_task)
            return _replace(
                current,
                status=COMMITTED,
                actual=from_storage(spent),
                settled_at=_dt(settled),
                task_id=final_task,
            )

    def release(self, reservation: Reservation | str) -> Reservation:
        """Free a reservation's credits (the request failed or was never sent).

        Releasing twice, or releasing an expired reservation, is a no-op that returns it;
        releasing a committed one raises :class:`ReservationError`.
        """
        res_id = _reservation_id(reservation)
        return self._retrying(lambda: self._release(res_id))

    def _release(self, res_id: str) -> Reservation:
        now = self.clock()
        with self._transaction() as cur:
            current = self._locked(cur, res_id)
            if current.status in (RELEASED, EXPIRED):
                return current
            if current.status == COMMITTED:
                raise ReservationError(f"reservation {res_id} is already committed; it cannot be released")
            self._free(cur, current, RELEASED, now)
            return _replace(current, status=RELEASED, settled_at=_dt(_ms(now)))

    def attach_task(
        self, reservation: Reservation | str, task_id: str, metadata: Mapping[str, Any] | None = None
    ) -> Reservation:
        """Record the Kling task id (and extra metadata) of an accepted request."""
        res_id = _reservation_id(reservation)
        if not isinstance(task_id, str) or not task_id:
            raise ValidationError("task_id must be a non-empty string")
        with self._transaction() as cur:
            current = self._locked(cur, res_id)
            meta = {**current.metadata, **_clean_metadata(metadata)}
            cur.execute(
                "UPDATE reservations SET task_id = ?, metadata = ? WHERE id = ?",
                (task_id, json.dumps(meta), res_id),
            )
            return _replace(current, task_id=task_id, metadata=meta)

    def extend(self, reservation: Reservation | str, ttl: timedelta) -> Reservation:
        """Push a live reservation's lease to ``now + ttl`` (for tasks that run long)."""
        res_id = _reservation_id(reservation)
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise ValidationError(f"ttl must be a positive timedelta, not {ttl!r}")
        now = self.clock()
        with self._transaction() as cur:
            current = self._locked(cur, res_id)
            if current.status != RESERVED or current.expires_at <= now:
                raise ReservationError(
                    f"reservation {res_id} is {current.status}; its lease cannot be extended"
                )
            expires = _ms(now + ttl)
            cur.execute("UPDATE reservations SET expires_at = ? WHERE id = ?", (expires, res_id))
            return _replace(current, expires_at=_dt(expires))

    def sweep(self) -> int:
        """Reclaim every reservation whose lease has expired; returns how many."""

        def run() -> int:
            with self._transaction() as cur:
                return self._sweep(cur, self.clock())

        return self._retrying(run)

    def _retrying(self, operation: Callable[[], T]) -> T:
        for _ in range(RETRIES - 1):
            try:
                return operation()
            except Conflict:
                continue
        try:
            return operation()
        except Conflict as exc:
            raise StorageError(f"gave up after {RETRIES} conflicting attempts: {exc}") from None

    # -- internals -------------------------------------------------------------------------

    def _sweep_due(self, cur: Cursor, now: datetime, *, force: bool) -> None:
        now_ms = _ms(now)
        if force or now_ms >= self._next_sweep_ms:
            self._sweep(cur, now)
            self._next_sweep_ms = now_ms + int(self.sweep_interval.total_seconds() * 1000)

    def _has_expired(self, now: datetime) -> bool:
        with self._transaction() as cur:
            cur.execute(
                "SELECT 1 FROM reservations WHERE status = 'reserved' AND expires_at <= ? LIMIT 1",
                (_ms(now),),
            )
            return cur.fetchone() is not None

    def _sweep(self, cur: Cursor, now: datetime) -> int:
        cur.execute(_RES_SELECT + " WHERE status = 'reserved' AND expires_at <= ? ORDER BY id", (_ms(now),))
        expired = [_reservation(row) for row in cur.fetchall()]
        for res in expired:
            self._free(cur, res, EXPIRED, now)
        return len(expired)

    def _free(self, cur: Cursor, res: Reservation, status: str, now: datetime) -> None:
        milli = to_storage(res.amount)
        for budget_id, window_key in res.windows:
            cur.execute(
                "UPDATE budget_windows SET reserved_milli = reserved_milli - ? "
                "WHERE budget_id = ? AND window_key = ?",
                (milli, budget_id, window_key),
            )
        cur.execute(
            "UPDATE reservations SET status = ?, settled_at = ? WHERE id = ? AND status = ?",
            (status, _ms(now), res.id, RESERVED),
        )

    def _locked(self, cur: Cursor, res_id: str) -> Reservation:
        cur.execute(_RES_SELECT + " WHERE id = ?" + self._lock_reservation_sql(), (res_id,))
        row = cur.fetchone()
        if row is None:
            raise ReservationError(f"reservation {res_id!r} does not exist in this ledger")
        return _reservation(row)

    def _reservation_by(self, cur: Cursor, column: str, value: str) -> Reservation | None:
        cur.execute(_RES_SELECT + f" WHERE {column} = ?", (value,))
        row = cur.fetchone()
        return None if row is None else _reservation(row)

    def _insert_charge(
        self, cur: Cursor, res: Reservation, spent: int, settled: int, task_id: str | None
    ) -> None:
        meta = res.metadata
        created = _ms(res.created_at)
        duration = meta.get("duration")
        cur.execute(
            "INSERT INTO charges (reservation_id, idempotency_key, created_at, settled_at, "
            "estimate_milli, actual_milli, scopes, task_id, kind, model, mode, duration, audio, "
            "prompt_hash, prompt_preview, metadata) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                res.id,
                res.idempotency_key,
                created,
                settled,
                to_storage(res.amount),
                spent,
                json.dumps(res.scopes),
                task_id,
                _text(meta.get("kind") or meta.get("endpoint")),
                _text(meta.get("model") or meta.get("model_name")),
                _text(meta.get("mode")),
                int(duration) if isinstance(duration, (int, str)) and str(duration).isdigit() else None,
                1 if meta.get("audio") in (True, "on", "true") or meta.get("sound") == "on" else 0,
                _text(meta.get("prompt_hash")),
                _text(meta.get("prompt_preview")),
                json.dumps(meta),
            ),
        )

    # -- queries ---------------------------------------------------------------------------

    def get_reservation(self, ref: str) -> Reservation | None:
        """A reservation by id or by idempotency key."""
        with self._transaction() as cur:
            return self._reservation_by(cur, "id", ref) or self._reservation_by(cur, "idempotency_key", ref)

    def reservations(self, status: str | None = None, limit: int = 1000) -> list[Reservation]:
        """Reservations, newest first, optionally of one status (``reserved`` = pending)."""
        with self._transaction() as cur:
            if status is None:
                cur.execute(_RES_SELECT + " ORDER BY created_at DESC, id LIMIT ?", (limit,))
            else:
                cur.execute(
                    _RES_SELECT + " WHERE status = ? ORDER BY created_at DESC, id LIMIT ?",
                    (status, limit),
                )
            return [_reservation(row) for row in cur.fetchall()]

    def usage(self, scope: str, window: str | None = None, *, at: datetime | None = None) -> Usage:
        """Limit, used, reserved and remaining of one budget in the window containing ``at``."""
        scope = validate_scope(scope)
        if window is not None:
            window = validate_window(window)
        found = [u for u in self.usages(scope, at=at) if window is None or u.budget.window == window]
        if not found:
            what = f"{window} budget" if window else "budget"
            raise ValidationError(f"scope {scope} has no {what}; set one with set_budget()")
        if len(found) > 1:
            kinds = ", ".join(u.budget.window for u in found)
            raise ValidationError(f"scope {scope} has several budgets ({kinds}); pass window=")
        return found[0]

    def usages(self, scope: str | None = None, *, at: datetime | None = None) -> list[Usage]:
        """Usage of every budget (or of one scope's budgets) at ``at`` (default: now)."""
        moment = at or self.clock()
        if moment.tzinfo is None:
            raise ValidationError("at must be timezone-aware")
        out = []
        with self._transaction() as cur:
            if scope is None:
                cur.execute(_BUDGET_SELECT + " ORDER BY scope, id")
            else:
                cur.execute(_BUDGET_SELECT + " WHERE scope = ? ORDER BY id", (validate_scope(scope),))
            for b in [_budget(row) for row in cur.fetchall()]:
                w = window_at(b.window, b.tz, moment)
                cur.execute(
                    "SELECT used_milli, reserved_milli FROM budget_windows "
                    "WHERE budget_id = ? AND window_key = ?",
                    (b.id, w.key),
                )
                row = cur.fetchone() or (0, 0)
                out.append(Usage(b, w, from_storage(row[0]), from_storage(row[1])))
        return out

    def charges(
        self,
        scope: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Charge]:
        """Settled charges, oldest first, by reservation time, optionally of one scope."""
        where: list[str] = []
        params: list[Any] = []
        sql = _CHARGE_SELECT
        if scope is not None:
            where.append("c.scopes LIKE ? ESCAPE '\\'")
            params.append('%"' + _like_escape(validate_scope(scope)) + '"%')
        if since is not None:
            where.append("c.created_at >= ?")
            params.append(_ms(since))
        if until is not None:
            where.append("c.created_at < ?")
            params.append(_ms(until))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.created_at, c.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._transaction() as cur:
            cur.execute(sql, params)
            return [_charge(row) for row in cur.fetchall()]

    def totals(self) -> dict[str, Decimal]:
        """Sums over the whole ledger (a consistency check): committed actuals and live holds."""
        with self._transaction() as cur:
            cur.execute("SELECT COALESCE(SUM(actual_milli), 0) FROM charges")
            charged = cur.fetchone()[0]
            cur.execute(
                "SELECT COALESCE(SUM(amount_milli), 0) FROM reservations WHERE status = ?",
                (RESERVED,),
            )
            held = cur.fetchone()[0]
        return {"charged": from_storage(int(charged)), "reserved": from_storage(int(held))}


_BUDGET_SELECT = "SELECT id, scope, period, tz, limit_milli, max_per_request_milli, thresholds FROM budgets"
_RES_SELECT = (
    "SELECT id, idempotency_key, amount_milli, status, scopes, created_at, expires_at, "
    "actual_milli, settled_at, task_id, metadata, windows FROM reservations"
)
_CHARGE_SELECT = (
    "SELECT c.id, c.reservation_id, c.idempotency_key, c.created_at, c.settled_at, "
    "c.estimate_milli, c.actual_milli, c.scopes, c.task_id, c.kind, c.model, c.mode, "
    "c.duration, c.audio, c.prompt_hash, c.prompt_preview, c.metadata FROM charges c"
)


def _budget(row: Sequence[Any]) -> Budget:
    return Budget(
        id=int(row[0]),
        scope=row[1],
        window=row[2],
        tz=row[3],
        limit=from_storage(int(row[4])),
        max_per_request=None if row[5] is None else from_storage(int(row[5])),
        thresholds=tuple(Decimal(t) for t in json.loads(row[6])),
    )


def _reservation(row: Sequence[Any]) -> Reservation:
    return Reservation(
        id=row[0],
        idempotency_key=row[1] or row[0],
        amount=from_storage(int(row[2])),
        status=row[3],
        scopes=tuple(json.loads(row[4])),
        created_at=_dt(int(row[5])),
        expires_at=_dt(int(row[6])),
        actual=None if row[7] is None else from_storage(int(row[7])),
        settled_at=None if row[8] is None else _dt(int(row[8])),
        task_id=row[9],
        metadata=json.loads(row[10]),
        windows=tuple((int(b), str(k)) for b, k in json.loads(row[11])),
    )


def _charge(row: Sequence[Any]) -> Charge:
    return Charge(
        id=int(row[0]),
        reservation_id=row[1],
        idempotency_key=row[2],
        created_at=_dt(int(row[3])),
        settled_at=_dt(int(row[4])),
        estimate=from_storage(int(row[5])),
        actual=from_storage(int(row[6])),
        scopes=tuple(json.loads(row[7])),
        task_id=row[8],
        kind=row[9],
        model=row[10],
        mode=row[11],
        duration=row[12],
        audio=bool(row[13]),
        prompt_hash=row[14],
        prompt_preview=row[15],
        metadata=json.loads(row[16]),
    )


def _replace(res: Reservation, **changes: Any) -> Reservation:
    return replace(res, **changes)


def _new_id(now: datetime) -> str:
    """Time-ordered id (48-bit milliseconds + 80 random bits): inserts append, pages stay hot."""
    return f"{_ms(now):012x}{secrets.token_hex(10)}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reservation_id(ref: Reservation | str) -> str:
    if isinstance(ref, Reservation):
        return ref.id
    if isinstance(ref, str) and ref:
        return ref
    raise ValidationError(f"expected a Reservation or its id, not {ref!r}")


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
        raise ValidationError(f"idempotency_key must be a non-empty string of at most {MAX_KEY} characters")
    return key


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """JSON-safe metadata; a ``prompt`` is replaced by its SHA-256 and a 100-character preview."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata must be a mapping")
    meta = dict(metadata)
    prompt = meta.pop("prompt", None)
    if isinstance(prompt, str):
        meta.setdefault("prompt_hash", hashlib.sha256(prompt.encode()).hexdigest())
        meta.setdefault("prompt_preview", prompt[:PREVIEW])
    try:
        return dict(json.loads(json.dumps(meta, default=_json_default)))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"metadata is not JSON-serialisable: {exc}") from None


def _json_default(obj: object) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
