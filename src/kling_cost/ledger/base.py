"""Two-phase charging: reserve, commit, release, leases, cache hits.

Every operation that changes money is one transaction. Backends supply the transaction
(``_transaction``) and translate their driver's errors; the SQL uses ``?`` placeholders and
runs unchanged on SQLite and PostgreSQL. Hooks (:mod:`.hooks`) run inside the same
transactions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import DEFAULT_UNIT, Budget, Window, normalise_scopes, unit_advice, validate_unit, window_at
from ..errors import BudgetExceeded, ReservationError, StorageError, UnitMismatch, ValidationError
from ..money import format_amount, from_storage, parse_amount, to_storage
from ..text import bad_text
from ._rows import (
    BUDGET_SELECT,
    RETRIES,
    Conflict,
    Cursor,
    Refused,
    budget_from_row,
    check_key,
    clean_metadata,
    from_ms,
    new_id,
    replace_reservation,
    reservation_id_of,
    text_or_none,
    to_ms,
)
from .core import Clock
from .hooks import WindowState
from .idempotency import check_same_request
from .models import CACHED, COMMITTED, EXPIRED, RELEASED, RESERVED, Reservation
from .settlement import LedgerSettlement

__all__ = ["Clock", "Cursor", "Ledger"]

SUCCEEDED = "succeeded"
FAILED = "failed"
CACHE_HIT = "cache_hit"


class Ledger(LedgerSettlement):
    """Budgets and two-phase charging. Open one with :func:`kling_cost.open_ledger`."""

    # -- reserve -----------------------------------------------------------------------------

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
        priced = _priced(unit, catalog, catalog_date)
        amt = parse_amount(amount, what="amount")
        milli = to_storage(amt)
        scope_list = normalise_scopes(list(scopes) if not isinstance(scopes, str) else scopes)
        lease = ttl if ttl is not None else self.default_ttl
        if not isinstance(lease, timedelta) or lease <= timedelta(0):
            raise ValidationError(f"ttl must be a positive timedelta, not {lease!r}")
        key = check_key(idempotency_key) if idempotency_key is not None else None
        meta = clean_metadata(metadata)
        for attempt in range(RETRIES):
            try:
                with self._transaction() as cur:
                    now = self._now(cur)
                    self._sweep_due(cur, now, force=attempt > 0)
                    reservation = self._reserve(cur, now, milli, scope_list, key, lease, meta, priced)
                self._committed()
                return reservation
            except Conflict:
                continue
            except Refused as refused:
                if attempt == 0 and self._has_expired():
                    continue
                self._record_refusal(refused.error, scope_list)
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
        priced: tuple[str, str | None, str | None],
        *,
        enforce: bool = True,
    ) -> Reservation:
        marks = ",".join("?" * len(scopes))
        # Locked (shared) until this transaction ends: the unit checked below stays the unit
        # of every budget held on (a unit switch waits), and no budget vanishes under a hold.
        lock = self._lock_budgets_sql()
        cur.execute(BUDGET_SELECT + f" WHERE scope IN ({marks}) ORDER BY id" + lock, scopes)
        budgets = [budget_from_row(row) for row in cur.fetchall()]
        unit, catalog, catalog_date = priced
        for b in budgets:
            if b.unit != unit:
                raise _unit_mismatch(b, unit)
        windows = [(b, window_at(b.window, b.tz, now)) for b in budgets]
        refs = tuple((b.id, w.key) for b, w in windows)
        res_id = new_id(now)
        created = to_ms(now)
        expires = to_ms(now + ttl)
        cur.execute(
            "INSERT INTO reservations (id, idempotency_key, amount_milli, status, scopes, "
            "created_at, expires_at, windows, metadata, unit, catalog, catalog_date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
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
                unit,
                catalog,
                catalog_date,
            ),
        )
        revived = False
        if cur.rowcount != 1:
            if key is None:
                raise Conflict(f"reservation id {res_id} collided")
            existing = self._reservation_by(cur, "idempotency_key", key)  # reserved before
            if existing is None:
                raise Conflict(f"idempotency key {key!r} vanished while reserving")
            if existing.status not in (RELEASED, EXPIRED) or existing.task_id is not None:
                # The same request again gets the first one's reservation (it holds nothing
                # new); a different request under this key is refused (see .idempotency).
                asked = Reservation(
                    id=res_id,
                    idempotency_key=key,
                    amount=from_storage(milli),
                    status=RESERVED,
                    scopes=scopes,
                    created_at=from_ms(created),
                    expires_at=from_ms(expires),
                    unit=unit,
                )
                check_same_request(existing, asked, key)
                return existing
            # Released or expired before Kling accepted anything: nothing was ever charged
            # under this key, so it may be reserved again (a retried submission), with this
            # call's amount and scopes (no conflict: the first request never cost anything).
            res_id = existing.id
            cur.execute(
                "UPDATE reservations SET amount_milli = ?, status = ?, scopes = ?, created_at = ?, "
                "expires_at = ?, windows = ?, metadata = ?, settled_at = NULL, actual_milli = NULL, "
                "unit = ?, catalog = ?, catalog_date = ? WHERE id = ? AND status = ?",
                (
                    milli,
                    RESERVED,
                    json.dumps(scopes),
                    created,
                    expires,
                    json.dumps(refs),
                    json.dumps(meta),
                    unit,
                    catalog,
                    catalog_date,
                    res_id,
                    existing.status,
                ),
            )
            if cur.rowcount != 1:
                raise Conflict(f"reservation {res_id} changed while being reserved again")
            revived = True
        amount = from_storage(milli)
        for b in budgets:
            if enforce and b.max_per_request is not None and amount > b.max_per_request:
                raise Refused(
                    BudgetExceeded(
                        f"Request of {format_amount(amount)} {b.unit} exceeds the per-request maximum "
                        f"of {format_amount(b.max_per_request)} {b.unit} on {b.scope} ({b.window} budget)",
                        scope=b.scope,
                        window=b.window,
                        requested=amount,
                        available=b.max_per_request,
                        limit=b.limit,
                        reason="max_per_request",
                        unit=b.unit,
                    )
                )
        states = [self._hold(cur, b, w, milli, enforce) for b, w in windows]
        reservation = Reservation(
            unit=unit,
            catalog=catalog,
            catalog_date=catalog_date,
            id=res_id,
            idempotency_key=key or res_id,
            amount=amount,
            status=RESERVED,
            scopes=scopes,
            created_at=from_ms(created),
            expires_at=from_ms(expires),
            metadata=meta,
            windows=refs,
            revived=revived,
            fresh=True,
        )
        for hook in self.hooks:
            hook.after_reserve(cur, now, reservation, states)
        return reservation

    def _hold(self, cur: Cursor, b: Budget, w: Window, milli: int, enforce: bool = True) -> WindowState:
        """The conditional update that makes the ceiling hold: ``used + reserved <= limit``."""
        limit = to_storage(b.limit) if enforce else 1 << 62
        row = None
        if milli <= limit:
            cur.execute(
                "INSERT INTO budget_windows (budget_id, window_key, used_milli, reserved_milli) "
                "VALUES (?, ?, 0, ?) ON CONFLICT (budget_id, window_key) DO UPDATE "
                "SET reserved_milli = budget_windows.reserved_milli + excluded.reserved_milli "
                "WHERE budget_windows.used_milli + budget_windows.reserved_milli "
                "+ excluded.reserved_milli <= ? "
                "RETURNING used_milli, reserved_milli",
                (b.id, w.key, milli, limit),
            )
            row = cur.fetchone()
        if row is not None:
            return WindowState(b, w.key, int(row[0]), int(row[1]))
        cur.execute(
            "SELECT used_milli, reserved_milli FROM budget_windows WHERE budget_id = ? AND window_key = ?",
            (b.id, w.key),
        )
        used, reserved = cur.fetchone() or (0, 0)
        available = from_storage(max(0, limit - used - reserved))
        amount = from_storage(milli)
        raise Refused(
            BudgetExceeded(
                f"{b.window.capitalize()} budget exceeded on {b.scope}: "
                f"{format_amount(from_storage(used + reserved))} + {format_amount(amount)} "
                f"> {format_amount(b.limit)} {b.unit} ({w.key}; {format_amount(available)} available)",
                scope=b.scope,
                window=b.window,
                requested=amount,
                available=available,
                limit=b.limit,
                unit=b.unit,
            )
        )

    def _record_refusal(self, error: BudgetExceeded, scopes: Sequence[str]) -> None:
        """Let hooks record a refusal (e.g. a "refused" alert) in a transaction of its own."""
        if not self.hooks:
            return
        with self._transaction() as cur:
            now = self._now(cur)
            for hook in self.hooks:
                hook.after_refusal(cur, now, error, scopes)
        self._committed()

    # -- settle ------------------------------------------------------------------------------

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
        actual_milli = (
            None if actual is None else to_storage(parse_amount(actual, what="actual", allow_zero=True))
        )
        extra = clean_metadata(metadata)
        task = text_or_none(task_id)
        return self._retrying(lambda: self._commit(res_id, actual_milli, task, force, extra))

    def _commit(
        self,
        res_id: str,
        actual_milli: int | None,
        task_id: str | None,
        force: bool,
        extra: dict[str, Any],
    ) -> Reservation:
        with self._transaction() as cur:
            now = self._now(cur)
            return self._commit_in(cur, now, self._locked(cur, res_id), actual_milli, task_id, force, extra)

    def _commit_in(
        self,
        cur: Cursor,
        now: datetime,
        current: Reservation,
        actual_milli: int | None,
        task_id: str | None,
        force: bool,
        extra: dict[str, Any],
        *,
        rise: int | None = None,
    ) -> Reservation:
        """Commit the (locked) reservation ``current`` in the transaction of ``cur``; ``rise``
        as in :meth:`_settle_windows`."""
        res_id = current.id
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
        states = self._settle_windows(cur, current, held, spent, rise)
        final_task = task_id or current.task_id
        if extra:
            current = replace_reservation(current, metadata={**current.metadata, **extra})
        settled = self._mark(cur, current, COMMITTED, now, spent, final_task, metadata_changed=bool(extra))
        self._insert_charge(cur, now, current, SUCCEEDED, spent, final_task, states)
        return replace_reservation(settled, actual=from_storage(spent), task_id=final_task)

    def release(self, reservation: Reservation | str, *, failed: bool | None = None) -> Reservation:
        """Free a reservation's credits (the request failed or was never sent).

        A reservation with a Kling task attached (or ``failed=True``) is recorded as a failed
        generation: a charge row of 0 (Kling does not charge failed tasks). Releasing twice,
        or releasing an expired reservation, is a no-op that returns it; releasing a
        committed one raises :class:`ReservationError`.
        """
        res_id = reservation_id_of(reservation)
        return self._retrying(lambda: self._release(res_id, failed))

    def _release(self, res_id: str, failed: bool | None) -> Reservation:
        with self._transaction() as cur:
            now = self._now(cur)
            current = self._locked(cur, res_id)
            if current.status in (RELEASED, EXPIRED):
                return current
            if current.status == COMMITTED:
                raise ReservationError(f"reservation {res_id} is already committed; it cannot be released")
            states = self._settle_windows(cur, current, to_storage(current.amount), 0)
            released = self._mark(cur, current, RELEASED, now, None, current.task_id)
            if failed or (failed is None and current.task_id):
                self._insert_charge(cur, now, current, FAILED, 0, current.task_id, states)
            return released

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
        priced = _priced(unit, catalog, catalog_date)
        milli = to_storage(parse_amount(amount, what="amount"))
        scope_list = normalise_scopes(list(scopes) if not isinstance(scopes, str) else scopes)
        key = None if idempotency_key is None else check_key(idempotency_key)
        meta = clean_metadata(metadata)
        task = text_or_none(task_id)

        def run() -> Reservation:
            # One transaction: the hold and its commit happen together or not at all.
            with self._transaction() as cur:
                now = self._now(cur)
                res = self._reserve(
                    cur, now, milli, scope_list, key, self.default_ttl, meta, priced, enforce=False
                )
                if res.status != RESERVED:
                    return res
                current = self._locked(cur, res.id)
                # A hold made just now lifted the level by the whole amount (for the overage).
                rise = milli if res.fresh else None
                return self._commit_in(cur, now, current, milli, task, False, {}, rise=rise)

        return self._retrying(run)

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
        priced = _priced(unit, catalog, catalog_date)
        milli = to_storage(parse_amount(amount, what="amount"))
        scope_list = normalise_scopes(list(scopes) if not isinstance(scopes, str) else scopes)
        key = None if idempotency_key is None else check_key(idempotency_key)
        meta = clean_metadata(metadata)

        def run() -> Reservation:
            with self._transaction() as cur:
                now = self._now(cur)
                return self._reserve(
                    cur, now, milli, scope_list, key, self.default_ttl, meta, priced, enforce=False
                )

        return self._retrying(run)

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
        unit, catalog, catalog_date = _priced(unit, catalog, catalog_date)
        saved_milli = to_storage(parse_amount(saved, what="saved", allow_zero=True))
        scope_list = normalise_scopes(list(scopes) if not isinstance(scopes, str) else scopes)
        key = None if idempotency_key is None else check_key(idempotency_key)
        meta = clean_metadata(metadata)
        task_id = text_or_none(task_id)

        def run() -> bool:
            now = self.clock()
            hit = Reservation(
                id=new_id(now),
                idempotency_key=key or "",
                amount=from_storage(saved_milli),
                status=CACHED,
                scopes=scope_list,
                created_at=from_ms(to_ms(now)),
                expires_at=from_ms(to_ms(now)),
                metadata=meta,
                task_id=task_id,
                unit=unit,
                catalog=catalog,
                catalog_date=catalog_date,
            )
            with self._transaction() as cur:
                cur.execute(
                    "INSERT INTO reservations (id, idempotency_key, amount_milli, actual_milli, "
                    "status, scopes, created_at, expires_at, settled_at, task_id, windows, metadata, "
                    "unit, catalog, catalog_date) "
                    "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, '[]', ?, ?, ?, ?) "
                    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                    (
                        hit.id,
                        key,
                        saved_milli,
                        CACHED,
                        json.dumps(scope_list),
                        to_ms(now),
                        to_ms(now),
                        to_ms(now),
                        task_id,
                        json.dumps(meta),
                        unit,
                        catalog,
                        catalog_date,
                    ),
                )
                if cur.rowcount != 1:  # recorded before (or the key names a reservation)
                    earlier = self._reservation_by(cur, "idempotency_key", key) if key else None
                    if earlier is not None:
                        check_same_request(earlier, hit, key or "")
                    return False
                self._insert_charge(
                    cur,
                    now,
                    replace_reservation(hit, idempotency_key=key or hit.id),
                    CACHE_HIT,
                    0,
                    task_id,
                    [],
                )
                return True

        return self._retrying(run)


def _priced(unit: str, catalog: str | None, catalog_date: str | None) -> tuple[str, str | None, str | None]:
    """Validated (unit, catalog name, catalog entry date) of a reservation."""
    unit = validate_unit(unit)
    if catalog is not None and (not isinstance(catalog, str) or not catalog.strip() or len(catalog) > 200):
        raise ValidationError(f"catalog must be a catalog name of at most 200 characters, not {catalog!r}")
    why = None if catalog is None else bad_text(catalog)
    if why is not None:  # refused alike on every backend (PostgreSQL text cannot hold it)
        raise ValidationError(f"catalog {catalog!r} {why}; use the catalog's name")
    if catalog_date is not None:
        try:
            catalog_date = date.fromisoformat(str(catalog_date)).isoformat()
        except ValueError:
            raise ValidationError(f"catalog_date {catalog_date!r} is not an ISO date (YYYY-MM-DD)") from None
    return unit, catalog, catalog_date


def _unit_mismatch(budget: Budget, unit: str) -> UnitMismatch:
    other = "kling-app-credits" if budget.unit == "credits" else "kling-api"
    return UnitMismatch(
        f"the {budget.window} budget of {budget.scope} counts {budget.unit} but this request is priced "
        f"in {unit}; price it with a catalog in {budget.unit} (--catalog {other}), or "
        f"{unit_advice(budget, unit)}",
        scope=budget.scope,
        window=budget.window,
        budget_unit=budget.unit,
        request_unit=unit,
    )
