"""The writing side of the alert outbox: threshold crossings written inside the ledger's own
transactions (the reading and delivery side is :class:`~.outbox_store.OutboxStore`).

:class:`AlertOutbox` is a :class:`~.hooks.LedgerHook` that every ledger installs (as
``ledger.outbox.writer``). After a
reservation, a settlement, a budget change or a refusal it compares the window's counters
*before* and *after* the change with each threshold of the budget (a few integer comparisons;
no SQL at all unless a threshold was crossed) and, on a crossing, writes one row into the
``alerts`` table with ``INSERT ... ON CONFLICT DO UPDATE ... WHERE cleared_at IS NOT NULL``:
the unique key (budget, window, threshold) makes many processes crossing at once produce one
row, and a cleared row is re-armed when the threshold is crossed again.

Alerts are cleared (``cleared_at`` set, a "resolved" message queued) when their window has
ended (noticed by the next reservation or by a deliverer) and when a budget change lifts the
level below the threshold (a raised limit). The ledger never sends anything: the deliverers
in :mod:`kling_cost.alerts` read the outbox. Listeners registered in
:attr:`AlertOutbox.listeners` are called after a transaction that wrote or cleared an alert
has committed (a deliverer uses this to wake up).

Every amount here is integer thousandths, as the ledger hands them over; ``Decimal`` appears
only in the text and details of an alert.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..budgets import Window, window_at
from ..money import MONEY, format_amount, format_quantity, from_storage
from ..timestamps import from_ms, to_ms
from .backend import Cursor
from .hooks import Refusal, SettledCharge, WindowState
from .records import BUDGET_SELECT, BudgetRow, ReservationRow, budget_row

__all__ = [
    "KIND_FORECAST",
    "KIND_MAX_PER_REQUEST",
    "KIND_OVERAGE",
    "KIND_PACK_EXPIRY",
    "KIND_REFUSED",
    "KIND_THRESHOLD",
    "PACK_BUDGET_ID",
    "AlertOutbox",
    "clear_alerts",
    "describe",
    "percent",
]

log = logging.getLogger("kling_cost.alerts")

KIND_THRESHOLD = "threshold"
KIND_REFUSED = "refused"
KIND_MAX_PER_REQUEST = "max_per_request"
KIND_OVERAGE = "overage"
"""A settlement took the window past its limit (a commit above its estimate, a late or forced
charge): once per budget window, whatever the number of commits that went over."""
KIND_FORECAST = "forecast"
"""The projection of a budget window (:mod:`kling_cost.bill.forecast`) passes its limit: once per
budget window (threshold ``forecast``), cleared when the window ends or the limit is raised."""
KIND_PACK_EXPIRY = "pack-expiry"
"""A resource pack expires soon with units it will not use: once per pack (budget id
:data:`PACK_BUDGET_ID`, window key the pack id, threshold ``pack-expiry``), cleared when the pack
has expired or its units are no longer at risk."""
PACK_BUDGET_ID = 0
"""The budget id of resource-pack alerts: no budget has it (ids start at 1 on both backends and
are never reused), and the ``alerts`` table has no foreign key on ``budget_id``."""

_UPSERT = (
    "INSERT INTO alerts (budget_id, scope, period, window_key, kind, threshold, used_milli, "
    "reserved_milli, limit_milli, message, details, status, attempts, next_attempt_at, created_at, "
    "sent_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, '[]') "
    "ON CONFLICT (budget_id, window_key, threshold) DO UPDATE SET kind = excluded.kind, "
    "used_milli = excluded.used_milli, reserved_milli = excluded.reserved_milli, "
    "limit_milli = excluded.limit_milli, message = excluded.message, details = excluded.details, "
    "status = 'pending', attempts = 0, last_error = NULL, next_attempt_at = excluded.next_attempt_at, "
    "created_at = excluded.created_at, delivered_at = NULL, cleared_at = NULL, "
    "resolved_status = NULL, resolved_at = NULL, sent_to = '[]', claim = NULL "
    "WHERE alerts.cleared_at IS NOT NULL"
)

_INSERT_ONCE = _UPSERT[: _UPSERT.index(" ON CONFLICT")] + (
    " ON CONFLICT (budget_id, window_key, threshold) DO NOTHING"
)
"""An alert for a window that has ended: written if the window never had it, never re-armed
(its row was cleared because the window ended, not because the level went back down)."""

_CLEAR = (
    "UPDATE alerts SET cleared_at = ?, resolved_status = 'pending', "
    "next_attempt_at = CASE WHEN claim IS NULL THEN ? ELSE next_attempt_at END "
    "WHERE cleared_at IS NULL AND budget_id = ? AND "
)
_CLEAR_WHERE = {
    "older": "window_key < ?",
    "one": "window_key = ? AND threshold = ?",
    "all": "window_key IS NOT NULL",
}


def percent(fraction: Decimal) -> str:
    """``Decimal("0.8")`` -> ``"80"``; ``Decimal("0.125")`` -> ``"12.5"``."""
    return format(MONEY.multiply(fraction, 100).normalize(MONEY), "f")


def clear_alerts(cur: Cursor, now_ms: int, budget_id: int, which: str, params: Sequence[Any]) -> int:
    """Clear the open alerts of a budget (``which``: ``older`` than a window key, ``one``
    window and threshold, or ``all``) and queue their "resolved" messages; returns how many."""
    cur.execute(_CLEAR + _CLEAR_WHERE[which], (now_ms, now_ms, budget_id, *params))
    return max(0, cur.rowcount)


def describe(
    kind: str, budget: BudgetRow, window_key: str, threshold: str, level: int, limit: int, requested: int = 0
) -> str:
    """The one-line text of an alert (amounts in storage thousandths), every amount with the
    budget's unit."""
    unit = budget.unit
    where = f"{budget.scope} {budget.window} budget ({window_key})"
    remaining = f"{format_quantity(from_storage(max(0, limit - level)), unit)}"
    lim = f"{format_quantity(from_storage(limit), unit)}"
    asked = f"{format_quantity(from_storage(requested), unit)}"
    if kind == KIND_REFUSED:
        return (
            f"{where} refused a request of {asked}: "
            f"{format_amount(from_storage(level))} of {lim} used or reserved, {remaining} remaining"
        )
    if kind == KIND_MAX_PER_REQUEST:
        mpr = budget.max_per_request_milli if budget.max_per_request_milli is not None else limit
        return (
            f"{where} refused a request of {asked}: above the per-request maximum of "
            f"{format_quantity(from_storage(mpr), unit)}"
        )
    if kind == KIND_OVERAGE:
        return (
            f"{where} went over its limit: a charge took it {asked} "
            f"past the limit, to {format_amount(from_storage(level))} of {lim} used or reserved"
        )
    pct = percent(Decimal(threshold))
    return (
        f"{where} reached {pct}% of its limit: {format_amount(from_storage(level))} of {lim} "
        f"used or reserved, {remaining} remaining"
    )


class AlertOutbox:
    """Evaluates thresholds and writes the outbox; installed on every ledger as
    ``ledger.outbox.writer`` (one of ``ledger.hooks``)."""

    watches_rises_only = True
    """A settlement that did not raise a window's level crosses nothing: the ledger reads the
    windows back for this hook only when the actual was above what was held."""

    def __init__(self) -> None:
        self._marks: dict[tuple[int, tuple[Decimal, ...]], tuple[tuple[str, int], ...]] = {}
        self._seen: dict[int, str] = {}
        """Budget id -> the newest window key this process has cleared older alerts for."""
        self._local = threading.local()
        self.listeners: list[Callable[[], None]] = []
        """Called (in the committing thread) after a transaction that changed the outbox."""

    # -- the cheap path --------------------------------------------------------------------

    def marks(self, budget: BudgetRow) -> tuple[tuple[str, int], ...]:
        """(threshold label, level in thousandths at which it is crossed), lowest first."""
        limit = budget.limit_milli
        key = (limit, budget.thresholds)
        found = self._marks.get(key)
        if found is None:
            found = tuple(
                (str(t), int(MONEY.multiply(limit, t).to_integral_value(ROUND_CEILING, MONEY)))
                for t in sorted(budget.thresholds)
            )
            if len(self._marks) > 1024:
                self._marks.clear()
            self._marks[key] = found
        return found

    def window_known(self, budget_id: int, key: str) -> bool:
        """Whether this process has seen window ``key`` of the budget (the alerts of the
        windows before it are cleared): a reservation in it has nothing to clear."""
        return self._seen.get(budget_id) == key

    def after_reserve(
        self, cur: Cursor, now: datetime, reservation: ReservationRow, states: Sequence[WindowState]
    ) -> None:
        amount = reservation.amount_milli
        for state in states:
            if not self.window_known(state.budget.id, state.window_key):
                self._window_seen(cur, now, state.budget.id, state.window_key)
            after = state.used_milli + state.reserved_milli
            before = after - amount
            for label, mark in self.marks(state.budget):
                if before < mark <= after:
                    self._cross(cur, now, state, label, {"trigger": "reserve", "reservation": reservation.id})

    def after_settle(
        self, cur: Cursor, now: datetime, charge: SettledCharge, states: Sequence[WindowState]
    ) -> None:
        # A settlement raises the level by ``actual - held``; the hook does not know whether
        # the reservation still held its amount (an expired one holds nothing), so it assumes
        # the larger rise. A row that already exists makes the INSERT a no-op.
        rise = charge.actual_milli
        if rise <= 0:
            return
        for state in states:
            after = state.used_milli + state.reserved_milli
            for label, mark in self.marks(state.budget):
                if after - rise < mark <= after:
                    self._cross(cur, now, state, label, {"trigger": "commit", "task_id": charge.task_id})
            if state.overage_milli > 0:
                self._overage(cur, now, state, charge)

    def after_commit(self) -> None:
        """Called by the ledger after each committed transaction: wake the listeners if this
        thread's transaction wrote or cleared an alert."""
        if getattr(self._local, "changed", False):
            self._local.changed = False
            for listener in list(self.listeners):
                try:
                    listener()
                except Exception:  # a listener must never break the ledger
                    log.exception("alert outbox listener failed")

    # -- slower paths (rare: budget changes, refusals, crossings) ------------------------

    def after_budget_set(
        self, cur: Cursor, now: datetime, budget: BudgetRow, previous: BudgetRow | None
    ) -> None:
        window = window_at(budget.window, budget.tz, now)
        self._window_seen(cur, now, budget.id, window.key)
        cur.execute(
            "SELECT used_milli, reserved_milli FROM budget_windows WHERE budget_id = ? AND window_key = ?",
            (budget.id, window.key),
        )
        used, reserved = cur.fetchone() or (0, 0)
        level = int(used) + int(reserved)
        limit = budget.limit_milli
        marks = dict(self.marks(budget))
        cur.execute(
            "SELECT threshold, kind, limit_milli FROM alerts "
            "WHERE budget_id = ? AND window_key = ? AND cleared_at IS NULL",
            (budget.id, window.key),
        )
        active = {str(row[0]): (str(row[1]), int(row[2])) for row in cur.fetchall()}
        now_ms = to_ms(now)
        for threshold, (kind, alert_limit) in active.items():
            if kind == KIND_THRESHOLD:
                stale = threshold not in marks or level < marks[threshold]
            elif kind == KIND_REFUSED:
                stale = limit > alert_limit
            elif kind == KIND_OVERAGE:
                stale = level <= limit  # the limit now covers what was spent
            elif kind == KIND_FORECAST:
                stale = limit > alert_limit  # a new limit: the next evaluation projects against it
            else:
                stale = previous is not None and _mpr_raised(previous, budget)
            if stale and clear_alerts(cur, now_ms, budget.id, "one", (window.key, threshold)):
                self._local.changed = True
        state = WindowState(budget, window.key, int(used), int(reserved))
        for label, mark in marks.items():
            if level >= mark and label not in active:
                self._cross(cur, now, state, label, {"trigger": "budget_set"}, window)

    def after_refusal(self, cur: Cursor, now: datetime, refusal: Refusal, scopes: Sequence[str]) -> None:
        cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?", (refusal.scope, refusal.window))
        row = cur.fetchone()
        if row is None:
            return
        budget = budget_row(row)
        window = window_at(budget.window, budget.tz, now)
        self._window_seen(cur, now, budget.id, window.key)
        cur.execute(
            "SELECT used_milli, reserved_milli FROM budget_windows WHERE budget_id = ? AND window_key = ?",
            (budget.id, window.key),
        )
        used, reserved = cur.fetchone() or (0, 0)
        kind = KIND_MAX_PER_REQUEST if refusal.reason == "max_per_request" else KIND_REFUSED
        extra = {
            "trigger": "refusal",
            "requested": str(from_storage(refusal.requested_milli)),
            "available": str(from_storage(refusal.available_milli)),
            "scopes": list(scopes),
        }
        state = WindowState(budget, window.key, int(used), int(reserved))
        self._write(cur, now, state, kind, kind, extra, window, refusal.requested_milli)

    def budget_deleted(self, cur: Cursor, now: datetime, budget_id: int) -> None:
        """A deleted budget's alerts no longer apply: clear them all (a "resolved" follows)."""
        if clear_alerts(cur, to_ms(now), budget_id, "all", ()):
            self._local.changed = True
        self._seen.pop(budget_id, None)

    # -- writing -----------------------------------------------------------------------------

    def write_row(self, cur: Cursor, now: datetime, row: Sequence[Any], *, rearm: bool = True) -> bool:
        """Write one alert row computed elsewhere (``row``: budget id, scope, period, window key,
        kind, threshold, used, reserved and limit in thousandths, message, details as JSON text),
        or re-arm its cleared row; an active row of the same (budget, window, threshold) is left
        as it is. True when a row was written."""
        now_ms = to_ms(now)
        cur.execute(_UPSERT if rearm else _INSERT_ONCE, (*row, now_ms, now_ms))
        if cur.rowcount == 1:
            self._local.changed = True
            return True
        return False

    def cleared(self) -> None:
        """A transaction of this thread cleared alerts: wake the listeners after its commit."""
        self._local.changed = True

    def _window_seen(self, cur: Cursor, now: datetime, budget_id: int, key: str) -> None:
        """A window this process had not seen yet: clear the alerts of the windows before it."""
        seen = self._seen.get(budget_id)
        if seen is not None and seen >= key:
            return
        if clear_alerts(cur, to_ms(now), budget_id, "older", (key,)):
            self._local.changed = True
        self._seen[budget_id] = key

    def _overage(self, cur: Cursor, now: datetime, state: WindowState, charge: SettledCharge) -> None:
        """One ``overage`` alert per budget window (a later overage in it is a no-op), in the
        window the charge counts in, even when that window has ended since."""
        b = state.budget
        window = window_at(b.window, b.tz, from_ms(charge.created_at_ms))
        if window.key != state.window_key:  # cannot happen: a reservation counts where it was made
            window = window_at(b.window, b.tz, now)
        extra: dict[str, Any] = {
            "trigger": "commit",
            "task_id": charge.task_id,
            "estimate": str(from_storage(charge.estimate_milli)),
            "actual": str(from_storage(charge.actual_milli)),
            "overage": str(from_storage(state.overage_milli)),
        }
        ended = window.key != window_at(b.window, b.tz, now).key
        if ended:
            extra["window_ended"] = True
        self._write(
            cur, now, state, KIND_OVERAGE, KIND_OVERAGE, extra, window, state.overage_milli, rearm=not ended
        )

    def _cross(
        self,
        cur: Cursor,
        now: datetime,
        state: WindowState,
        label: str,
        extra: dict[str, Any],
        window: Window | None = None,
    ) -> None:
        b = state.budget
        current = window or window_at(b.window, b.tz, now)
        if current.key != state.window_key:
            return  # a late settlement in a window that has ended: nothing left to warn about
        self._write(cur, now, state, KIND_THRESHOLD, label, extra, current, 0)

    def _write(
        self,
        cur: Cursor,
        now: datetime,
        state: WindowState,
        kind: str,
        threshold: str,
        extra: dict[str, Any],
        window: Window,
        requested: int,
        *,
        rearm: bool = True,
    ) -> None:
        """Write the alert, or re-arm its cleared row (``rearm=False``: only write a new one)."""
        b = state.budget
        limit = b.limit_milli
        level = state.used_milli + state.reserved_milli
        details = {
            **extra,
            "unit": b.unit,
            "level": str(from_storage(level)),
            "remaining": str(from_storage(max(0, limit - level))),
            "tz": b.tz,
            "window_start": None if window.start is None else window.start.isoformat(),
            "window_end": None if window.end is None else window.end.isoformat(),
            "max_per_request": (
                None if b.max_per_request_milli is None else str(from_storage(b.max_per_request_milli))
            ),
        }
        now_ms = to_ms(now)
        cur.execute(
            _UPSERT if rearm else _INSERT_ONCE,
            (
                b.id,
                b.scope,
                b.window,
                state.window_key,
                kind,
                threshold,
                state.used_milli,
                state.reserved_milli,
                limit,
                describe(kind, b, state.window_key, threshold, level, limit, requested),
                json.dumps(details),
                now_ms,
                now_ms,
            ),
        )
        if cur.rowcount == 1:
            self._local.changed = True


def _mpr_raised(previous: BudgetRow, budget: BudgetRow) -> bool:
    before, now = previous.max_per_request_milli, budget.max_per_request_milli
    if now is None:
        return before is not None
    return before is not None and now > before
