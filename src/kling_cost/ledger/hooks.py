"""Extension points that run inside the ledger's own transactions.

A hook sees every change to money in the same transaction that makes it, so what it writes
(an alert in the outbox, a report rollup) commits or rolls back together with the change.
Hooks must not call back into the ledger's public methods (they would open a second
transaction); they use the cursor they are given.

Hooks see the ledger's own rows: every amount in integer thousandths (``*_milli``), as
stored (:class:`~.records.BudgetRow`, :class:`~.records.ReservationRow`, the records below);
nothing is converted to ``Decimal`` and back on the way. For hooks written when they were given
the public models, the rows still answer ``amount``, ``actual``, ``created_at``, ... (reservation)
and ``limit``, ``max_per_request`` (budget), converted only when read. A hook calling a ledger
method (a second transaction) raises :class:`~kling_cost.errors.StorageError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .backend import Cursor
    from .records import BudgetRow, ReservationRow

__all__ = ["LedgerHook", "Refusal", "SettledCharge", "WindowState"]


@dataclass(frozen=True, slots=True)
class WindowState:
    """A budget window's counters right after a change (integer thousandths)."""

    budget: BudgetRow
    window_key: str
    used_milli: int
    reserved_milli: int
    overage_milli: int = 0
    """After a settlement: how far it took this window past its limit (the rise of
    ``max(0, used + reserved - limit)``); 0 when the window stayed within it."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reservation one budget refused: over its limit (``reason="limit"``) or above its
    ``max_per_request`` (``"max_per_request"``). The caller gets a
    :class:`~kling_cost.errors.BudgetExceeded` made from it."""

    budget: BudgetRow
    window_key: str
    reason: str
    requested_milli: int
    available_milli: int
    level_milli: int = 0
    """``used + reserved`` of the window when it refused (0 for ``max_per_request``)."""

    @property
    def scope(self) -> str:
        return self.budget.scope

    @property
    def window(self) -> str:
        return self.budget.window


@dataclass(frozen=True, slots=True)
class SettledCharge:
    """The charge row just written: a succeeded task, a failed (refunded) one, or a cache hit."""

    id: int | None
    status: str
    created_at_ms: int
    settled_at_ms: int
    estimate_milli: int
    actual_milli: int
    scopes: tuple[str, ...]
    task_id: str | None
    kind: str | None
    model: str | None
    mode: str | None
    duration: int | None
    audio: bool
    metadata: dict[str, Any]
    unit: str = "units"
    overage_milli: int = 0
    """The largest ``overage_milli`` of the charge's windows (see :class:`WindowState`)."""


class LedgerHook(Protocol):
    """What the ledger calls; implement the methods you need (all are required by the type).

    A hook may set ``watches_budgets = False`` when it never reads the ``states`` of
    ``after_settle`` (the ledger then skips reading the budgets back), or
    ``watches_rises_only = True`` when it reads them only for settlements that raised a
    window's level (an actual above what was held).
    """

    def after_reserve(
        self, cur: Cursor, now: datetime, reservation: ReservationRow, states: Sequence[WindowState]
    ) -> None: ...

    def after_settle(
        self, cur: Cursor, now: datetime, charge: SettledCharge, states: Sequence[WindowState]
    ) -> None: ...

    def after_budget_set(
        self, cur: Cursor, now: datetime, budget: BudgetRow, previous: BudgetRow | None
    ) -> None: ...

    def after_refusal(self, cur: Cursor, now: datetime, refusal: Refusal, scopes: Sequence[str]) -> None: ...
