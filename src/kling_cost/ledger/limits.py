"""Budgets: setting a limit (and its unit), deleting a budget (reading them: :mod:`.queries`).

Each method is the body of one transaction of the :class:`~.ledger.Ledger` (which validates
the arguments, opens the transaction and retries it); limits travel as integer thousandths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from ..budgets import (
    DEFAULT_UNIT,
    parse_limit,
    parse_thresholds,
    validate_scope,
    validate_tz,
    validate_unit,
    validate_window,
)
from ..errors import ValidationError
from ..money import to_storage
from ..timestamps import to_ms
from .backend import Backend, Conflict, Cursor
from .hooks import LedgerHook
from .outbox import AlertOutbox
from .records import BUDGET_SELECT, BudgetRow, budget_row

__all__ = ["BudgetRequest", "Limits", "budget_request"]


@dataclass(frozen=True, slots=True)
class BudgetRequest:
    """A budget as :meth:`~.ledger.Ledger.set_budget` was asked for it, checked, in thousandths
    (``unit`` None: keep the budget's unit)."""

    scope: str
    window: str
    tz: str
    limit_milli: int
    max_per_request_milli: int | None
    thresholds: tuple[Decimal, ...]
    unit: str | None


def budget_request(
    scope: str,
    limit: Decimal | int | str,
    window: str,
    tz: str,
    thresholds: Iterable[Decimal | str | int] | None,
    max_per_request: Decimal | int | str | None,
    unit: str | None,
    alerts: bool,
) -> BudgetRequest:
    """Check a caller's budget and convert its amounts to thousandths (the ledger's edge)."""
    scope = validate_scope(scope)
    wanted_unit = None if unit is None else validate_unit(unit)
    window = validate_window(window)
    limit_milli = to_storage(parse_limit(limit))
    tz = validate_tz(tz)
    marks = parse_thresholds(thresholds, alerts=alerts)
    mpr = None if max_per_request is None else to_storage(parse_limit(max_per_request, "max_per_request"))
    return BudgetRequest(scope, window, tz, limit_milli, mpr, marks, wanted_unit)


class Limits:
    """The budget steps of one ledger: its backend (for row locks), hooks and outbox writer."""

    def __init__(self, backend: Backend, hooks: list[LedgerHook], outbox: AlertOutbox) -> None:
        self.backend = backend
        self.hooks = hooks
        self.outbox = outbox

    def set(self, cur: Cursor, wanted: BudgetRequest) -> BudgetRow:
        """Create or update the budget ``wanted`` (its limit applies at once)."""
        scope, window, unit = wanted.scope, wanted.window, wanted.unit
        moment = cur.now
        now = to_ms(moment)
        # Asked for a unit: the row is locked (exclusive) before it is checked, so a
        # reservation that read the old unit has committed its hold and is seen by the
        # check, never missed.
        lock = self.backend.lock_budgets(True) if unit is not None else ""
        cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?" + lock, (scope, window))
        before = cur.fetchone()
        previous = None if before is None else budget_row(before)
        new_unit = unit or (previous.unit if previous is not None else DEFAULT_UNIT)
        if previous is not None and new_unit != previous.unit:
            self.check_unit_change(cur, previous, new_unit)
        checked = previous.unit if previous is not None else new_unit
        cur.execute(
            "INSERT INTO budgets (scope, period, tz, limit_milli, max_per_request_milli, "
            "thresholds, created_at, updated_at, unit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, period) DO UPDATE SET tz = excluded.tz, "
            "limit_milli = excluded.limit_milli, "
            "max_per_request_milli = excluded.max_per_request_milli, "
            "thresholds = excluded.thresholds, updated_at = excluded.updated_at, "
            "unit = excluded.unit WHERE budgets.unit = ?",
            (
                scope,
                window,
                wanted.tz,
                wanted.limit_milli,
                wanted.max_per_request_milli,
                json.dumps([str(t) for t in wanted.thresholds]),
                now,
                now,
                new_unit,
                checked,
            ),
        )
        if cur.rowcount != 1:  # its unit changed since it was read: read and check again
            raise Conflict(f"the {window} budget of {scope} changed unit meanwhile")
        cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?", (scope, window))
        budget = budget_row(cur.fetchone())
        for hook in self.hooks:
            hook.after_budget_set(cur, moment, budget, previous)
        return budget

    @staticmethod
    def check_unit_change(cur: Cursor, budget: BudgetRow, unit: str) -> None:
        """A budget's counters are in its unit: switching units is allowed only while empty."""
        cur.execute(
            "SELECT window_key FROM budget_windows WHERE budget_id = ? "
            "AND (used_milli <> 0 OR reserved_milli <> 0) ORDER BY window_key LIMIT 1",
            (budget.id,),
        )
        row = cur.fetchone()
        if row is not None:
            raise ValidationError(
                f"the {budget.window} budget of {budget.scope} counts {budget.unit} and has "
                f"{budget.unit} used or held ({row[0]}); it cannot switch to {unit}: delete it "
                f"(kling-cost budget delete {budget.scope} --window {budget.window}) and set it "
                f"again, or use another scope for {unit}"
            )

    def delete(self, cur: Cursor, scope: str, window: str) -> bool:
        """Remove a budget and its window counters (charges stay); True if one was deleted."""
        cur.execute(  # the budget first, as reservations lock it: none is cut short
            "SELECT id FROM budgets WHERE scope = ? AND period = ?" + self.backend.lock_budgets(True),
            (scope, window),
        )
        row = cur.fetchone()
        if row is None:
            return False
        cur.execute("DELETE FROM budget_windows WHERE budget_id = ?", (row[0],))
        cur.execute("DELETE FROM budgets WHERE id = ?", (row[0],))
        self.outbox.budget_deleted(cur, cur.now, int(row[0]))
        return True
