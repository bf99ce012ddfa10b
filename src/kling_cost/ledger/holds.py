"""Reserving: the conditional update that makes the ceiling hold, and refusals.

:meth:`Holds.reserve` is the body of the transaction of a reservation (the
:class:`~.ledger.Ledger` opens it and retries it): it locks the scopes' budgets (shared, in
id order), writes the reservation row (or finds the one an idempotency key already names),
then holds the amount on every budget window with one conditional statement each::

    INSERT INTO budget_windows ... ON CONFLICT DO UPDATE SET reserved = reserved + :a
        WHERE used + reserved + :a <= :limit

A window without room refuses (:class:`Refused`, carrying a :class:`~.hooks.Refusal`) and
the whole transaction rolls back: nothing is held anywhere. Amounts are thousandths here; the
caller's :class:`~kling_cost.errors.BudgetExceeded` is made by :func:`exceeded`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import Window, normalise_scopes, unit_advice, validate_unit, window_at
from ..errors import BudgetExceeded, UnitMismatch, ValidationError
from ..money import format_amount, format_quantity, from_storage, storage_amount
from ..text import bad_text
from ..timestamps import to_ms
from .backend import Backend, Conflict, Cursor
from .hooks import LedgerHook, Refusal, WindowState
from .idempotency import check_same_request
from .models import EXPIRED, RELEASED, RESERVED
from .records import (
    BUDGET_SELECT,
    BudgetRow,
    ReservationRow,
    budget_row,
    check_key,
    clean_metadata,
    new_id,
    reservation_by,
    windows_json,
)

__all__ = [
    "HOLD_WINDOW",
    "INSERT_RESERVATION",
    "MAX_TTL",
    "NO_LIMIT",
    "Holds",
    "Refused",
    "Request",
    "check_ttl",
    "exceeded",
    "held_row",
    "request",
]

NO_LIMIT = 1 << 62
"""The limit of a hold that no budget may refuse (a charge that already happened)."""


INSERT_RESERVATION = (
    "INSERT INTO reservations (id, idempotency_key, amount_milli, status, scopes, "
    "created_at, expires_at, windows, metadata, unit, catalog, catalog_date) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
)
"""A new reservation row (nothing when its idempotency key names one already)."""

HOLD_WINDOW = (
    "INSERT INTO budget_windows (budget_id, window_key, used_milli, reserved_milli) "
    "VALUES (?, ?, 0, ?) ON CONFLICT (budget_id, window_key) DO UPDATE "
    "SET reserved_milli = budget_windows.reserved_milli + excluded.reserved_milli "
    "WHERE budget_windows.used_milli + budget_windows.reserved_milli "
    "+ excluded.reserved_milli <= ? "
    "RETURNING used_milli, reserved_milli"
)
"""The conditional update that makes the ceiling hold (budget id, window key, amount, limit):
the window's counters, or no row when it lacks room."""


class Refused(Exception):
    """A budget refused the reservation being made (the transaction must roll back)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class Holds:
    """The reserving steps of one ledger: they share its backend (for row locks) and hooks."""

    def __init__(self, backend: Backend, hooks: list[LedgerHook]) -> None:
        self.backend = backend
        self.hooks = hooks
        self._selects: dict[int, str] = {}
        """Number of scopes -> the statement reading their budgets."""
        self._windows: dict[tuple[str, str], Window] = {}
        """(window kind, time zone) -> the window computed last: reused while it contains now."""

    def budgets_select(self, count: int) -> str:
        """The statement reading the budgets of ``count`` scopes, in id order, locked (shared)
        until the transaction ends where the backend locks rows."""
        select = self._selects.get(count)
        if select is None:
            marks = ",".join("?" * count)
            select = BUDGET_SELECT + f" WHERE scope IN ({marks}) ORDER BY id" + self.backend.lock_budgets()
            self._selects[count] = select
        return select

    def window(self, b: BudgetRow, now: datetime) -> Window:
        """The window of budget ``b`` containing ``now`` (:func:`window_at`), computed once per
        window and time zone (windows partition time: one containing ``now`` is its window)."""
        key = (b.window, b.tz)
        found = self._windows.get(key)
        if found is not None:
            start, end = found.start, found.end
            if start is None or end is None or start <= now < end:  # lifetime: no bounds
                return found
        found = window_at(b.window, b.tz, now)
        if len(self._windows) >= 1024:
            self._windows.clear()
        self._windows[key] = found
        return found

    def reserve(
        self, cur: Cursor, now: datetime, req: Request, ttl: timedelta, *, enforce: bool = True
    ) -> ReservationRow:
        """Hold ``req.milli`` on every budget of its scopes, all or nothing (:class:`Refused`);
        ``enforce=False`` holds beyond any limit. Returns the new (or revived) reservation, or
        the one its idempotency key already names for the same request."""
        milli, scopes, key, unit = req.milli, req.scopes, req.key, req.unit
        # Locked (shared) until this transaction ends: the unit checked below stays the unit
        # of every budget held on (a unit switch waits), and no budget vanishes under a hold.
        cur.execute(self.budgets_select(len(scopes)), scopes)
        budgets = [budget_row(row) for row in cur.fetchall()]
        for b in budgets:
            if b.unit != unit:
                raise unit_mismatch(b, unit)
        windows = [(b, self.window(b, now)) for b in budgets]
        refs = tuple((b.id, w.key) for b, w in windows)
        refs_json = windows_json(refs)
        at = to_ms(now)
        asked = held_row(new_id(now, at), req, at, to_ms(now + ttl), refs)
        values = (
            milli,
            RESERVED,
            req.scopes_json,
            asked.created_at_ms,
            asked.expires_at_ms,
            refs_json,
            req.meta_json,
            unit,
            req.catalog,
            req.catalog_date,
        )
        cur.execute(INSERT_RESERVATION, (asked.id, key, *values))
        # Without a key the row is inserted or the statement fails (an id collision is a
        # unique violation: Conflict, wherever the backend reports it), so there is no count
        # to wait for and PostgreSQL sends this INSERT with the window's update.
        if key is not None and cur.rowcount != 1:
            existing = reservation_by(cur, "idempotency_key", key)  # reserved before
            if existing is None:
                raise Conflict(f"idempotency key {key!r} vanished while reserving")
            if existing.status not in (RELEASED, EXPIRED) or existing.task_id is not None:
                # The same request again gets the first one's reservation (it holds nothing
                # new); a different request under this key is refused (see .idempotency).
                check_same_request(existing, asked, key)
                return existing
            # Released or expired before Kling accepted anything: nothing was ever charged
            # under this key, so it may be reserved again (a retried submission), with this
            # call's amount and scopes (no conflict: the first request never cost anything).
            cur.execute(
                "UPDATE reservations SET amount_milli = ?, status = ?, scopes = ?, created_at = ?, "
                "expires_at = ?, windows = ?, metadata = ?, settled_at = NULL, actual_milli = NULL, "
                "unit = ?, catalog = ?, catalog_date = ? WHERE id = ? AND status = ?",
                (*values, existing.id, existing.status),
            )
            if cur.rowcount != 1:
                raise Conflict(f"reservation {existing.id} changed while being reserved again")
            asked = replace(asked, id=existing.id, revived=True)
        for b, w in windows:
            mpr = b.max_per_request_milli
            if enforce and mpr is not None and milli > mpr:
                raise Refused(Refusal(b, w.key, "max_per_request", milli, mpr))
        states = [self.hold(cur, b, w, milli, NO_LIMIT if not enforce else b.limit_milli) for b, w in windows]
        for hook in self.hooks:
            hook.after_reserve(cur, now, asked, states)
        return asked

    def record_refusal(self, cur: Cursor, refusal: Refusal, scopes: tuple[str, ...]) -> None:
        """Let the hooks record a refusal (a "refused" alert), in a transaction of its own."""
        for hook in self.hooks:
            hook.after_refusal(cur, cur.now, refusal, scopes)

    @staticmethod
    def hold(cur: Cursor, b: BudgetRow, w: Window, milli: int, limit: int) -> WindowState:
        """The conditional update that makes the ceiling hold: ``used + reserved <= limit``."""
        row = None
        if milli <= limit:
            cur.execute(HOLD_WINDOW, (b.id, w.key, milli, limit))
            row = cur.fetchone()
        if row is not None:
            return WindowState(b, w.key, int(row[0]), int(row[1]))
        cur.execute(
            "SELECT used_milli, reserved_milli FROM budget_windows WHERE budget_id = ? AND window_key = ?",
            (b.id, w.key),
        )
        used, reserved = cur.fetchone() or (0, 0)
        level = int(used) + int(reserved)
        raise Refused(Refusal(b, w.key, "limit", milli, max(0, limit - level), level))


def held_row(
    res_id: str, req: Request, at: int, expires: int, refs: tuple[tuple[int, str], ...]
) -> ReservationRow:
    """The row of a new reservation of ``req`` made at ``at``, held on the windows ``refs``
    until ``expires`` (milliseconds), as written: fresh (the caller owns the hold)."""
    return ReservationRow(
        res_id,
        req.key,
        req.milli,
        RESERVED,
        req.scopes,
        at,
        expires,
        None,
        None,
        None,
        req.meta,
        refs,
        req.unit,
        req.catalog,
        req.catalog_date,
        False,
        True,  # fresh
        req.meta_json,
        req.scopes_json,
    )


def exceeded(refusal: Refusal) -> BudgetExceeded:
    """The error a caller gets for ``refusal`` (amounts as ``Decimal``, in the budget's unit)."""
    b = refusal.budget
    amount = from_storage(refusal.requested_milli)
    available = from_storage(refusal.available_milli)
    limit = from_storage(b.limit_milli)
    if refusal.reason == "max_per_request":
        message = (
            f"Request of {format_quantity(amount, b.unit)} exceeds the per-request maximum "
            f"of {format_quantity(available, b.unit)} on {b.scope} ({b.window} budget)"
        )
    else:
        message = (
            f"{b.window.capitalize()} budget exceeded on {b.scope}: "
            f"{format_amount(from_storage(refusal.level_milli))} + {format_amount(amount)} "
            f"> {format_quantity(limit, b.unit)} ({refusal.window_key}; {format_amount(available)} available)"
        )
    return BudgetExceeded(
        message,
        scope=b.scope,
        window=b.window,
        requested=amount,
        available=available,
        limit=limit,
        reason=refusal.reason,
        unit=b.unit,
    )


@dataclass(frozen=True, slots=True)
class Request:
    """What a reservation (or a charge, or a cache hit) asks for, checked, in thousandths."""

    milli: int
    scopes: tuple[str, ...]
    key: str | None
    meta: dict[str, Any]
    unit: str
    catalog: str | None
    catalog_date: str | None
    meta_json: str
    """``meta`` as stored (encoded once, here at the edge)."""
    scopes_json: str
    """``scopes`` as stored."""


def request(
    amount: Decimal | int | str,
    scopes: Iterable[str] | str,
    idempotency_key: str | None,
    metadata: Mapping[str, Any] | None,
    unit: str,
    catalog: str | None,
    catalog_date: str | None,
    *,
    saved: bool = False,
) -> Request:
    """Check a caller's request and convert its amount to thousandths (the ledger's edge);
    ``saved``: the amount is what a cache hit saved (zero allowed)."""
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
    milli = storage_amount(amount, what="saved" if saved else "amount", allow_zero=saved)
    scope_list, scopes_json = scopes_of_request(scopes)
    key = None if idempotency_key is None else check_key(idempotency_key)
    meta = clean_metadata(metadata)
    meta_json = json.dumps(meta) if meta else "{}"
    return Request(milli, scope_list, key, meta, unit, catalog, catalog_date, meta_json, scopes_json)


_SCOPES: dict[str | tuple[str, ...], tuple[tuple[str, ...], str]] = {}


def scopes_of_request(scopes: Iterable[str] | str) -> tuple[tuple[str, ...], str]:
    """The normalised scopes of a request (:func:`normalise_scopes`) and their JSON text,
    remembered per distinct list of scopes (callers ask for the same few over and over)."""
    key: str | tuple[str, ...] = scopes if isinstance(scopes, str) else tuple(scopes)
    try:
        found = _SCOPES.get(key)
    except TypeError:  # an unhashable element: normalise_scopes says what is wrong with it
        found = None
    if found is None:
        scope_list = normalise_scopes(key if isinstance(key, str) else list(key))
        found = (scope_list, json.dumps(scope_list))
        if len(_SCOPES) >= 1024:
            _SCOPES.clear()
        _SCOPES[key] = found
    return found


def unit_mismatch(budget: BudgetRow, unit: str) -> UnitMismatch:
    other = "kling-app-credits" if budget.unit == "credits" else "kling-api"
    return UnitMismatch(
        f"the {budget.window} budget of {budget.scope} counts {budget.unit} but this request is priced "
        f"in {unit}; price it with a catalog in {budget.unit} (--catalog {other}), or "
        f"{unit_advice(budget.to_budget(), unit)}",
        scope=budget.scope,
        window=budget.window,
        budget_unit=budget.unit,
        request_unit=unit,
    )


MAX_TTL = timedelta(days=36_525)
"""The longest lease (a century): a longer one would end past any date a ledger can record."""


def check_ttl(ttl: object) -> timedelta:
    """A lease length: a positive timedelta of at most :data:`MAX_TTL`."""
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise ValidationError(f"ttl must be a positive timedelta, not {ttl!r}")
    if ttl > MAX_TTL:
        raise ValidationError(f"ttl must be at most {MAX_TTL.days} days, not {ttl!r}")
    return ttl
