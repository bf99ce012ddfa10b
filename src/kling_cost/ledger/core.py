"""The ledger's frame: backend registry, transactions, schema, budgets, hooks."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from ..budgets import (
    DEFAULT_UNIT,
    Budget,
    parse_limit,
    parse_thresholds,
    validate_scope,
    validate_tz,
    validate_unit,
    validate_window,
)
from ..errors import StorageError, ValidationError
from ..money import to_storage
from ._rows import BUDGET_SELECT, RETRIES, Conflict, Cursor, budget_from_row, to_ms, utc_now
from .hooks import LedgerHook
from .outbox import AlertOutbox
from .rollup import RollupHook
from .schema import MIGRATIONS

__all__ = ["Clock", "LedgerCore"]

Clock = Callable[[], datetime]
T = TypeVar("T")

DEFAULT_TTL = timedelta(minutes=30)


class LedgerCore(ABC):
    """Backend registry, transactions, schema and budgets; see :class:`Ledger`."""

    schemes: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[LedgerCore]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            LedgerCore.registry[scheme] = cls

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        default_ttl: timedelta = DEFAULT_TTL,
        sweep_interval: timedelta = timedelta(seconds=1),
    ) -> None:
        self.url = url
        self.clock: Clock = clock or utc_now
        self.default_ttl = default_ttl
        self.sweep_interval = sweep_interval
        self._next_sweep_ms = 0
        self.outbox = AlertOutbox()
        """Writes threshold crossings into the ``alerts`` table (see :mod:`.outbox`)."""
        self.hooks: list[LedgerHook] = [self.outbox, RollupHook()]
        """Called inside the ledger's own transactions (alert outbox, report rollups)."""

    # -- backend hooks -------------------------------------------------------------------

    url: str
    dialect: ClassVar[str] = "sqlite"
    """``sqlite`` or ``postgresql``: for migration steps and the few SQL fragments that differ."""
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

    def _lock_budgets_sql(self, exclusive: bool = False) -> str:
        """A suffix for a ``SELECT`` of budget rows that locks them until the transaction ends:
        shared (a reservation holding on them: their unit and existence stay as read) or
        ``exclusive`` (a unit switch, a deletion: waits for those reservations). SQLite needs
        none: ``BEGIN IMMEDIATE`` already serialises every writer."""
        return ""

    def _now(self, cur: Cursor) -> datetime:
        """The time every decision of the transaction of ``cur`` uses (lease expiry, sweeps,
        budget windows): the injected clock; else the backend's clock, the one shared by
        everyone who shares the ledger (SQLite: this machine's; PostgreSQL: the server's)."""
        return self.clock()

    def _scopes_contain(self, column: str, scope: str) -> tuple[str, str]:
        """A condition (one ``?``, and its value) true when the JSON scope list in ``column``
        holds exactly ``scope``. Not LIKE: SQLite's LIKE ignores ASCII case, and scopes are
        exact on every backend. The quotes make it a whole element, never a prefix."""
        return f"instr({column}, ?) > 0", json.dumps(scope)

    @abstractmethod
    def close(self) -> None:
        """Release connections. The ledger can not be used afterwards."""

    def __enter__(self) -> Any:
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
                    if callable(statement):
                        statement(cur, self.dialect)
                        continue
                    cur.execute(
                        statement.replace("{id}", self.id_column).replace(
                            "{without_rowid}", self.without_rowid
                        )
                    )
                cur.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, to_ms(self._now(cur))),
                )
                current = version
            return int(current)

    def _id_high_water(self, cur: Cursor, table: str, column: str) -> int:
        """The highest id ``table`` ever handed out, deleted rows included."""
        cur.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}")  # fixed names only
        return int(cur.fetchone()[0])

    def _after_bulk_insert(  # noqa: B027
        self, cur: Cursor, table: str, column: str, high_water: int
    ) -> None:
        """Let identity sequences continue after rows were inserted with explicit ids, above
        ``high_water`` (the source's :meth:`_id_high_water`): no id is ever handed out twice."""

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
        scope = validate_scope(scope)
        wanted_unit = None if unit is None else validate_unit(unit)
        window = validate_window(window)
        lim = parse_limit(limit)
        tz = validate_tz(tz)
        marks = parse_thresholds(thresholds, alerts=alerts)
        mpr = None if max_per_request is None else parse_limit(max_per_request, "max_per_request")

        def run() -> Budget:
            with self._transaction() as cur:
                moment = self._now(cur)
                now = to_ms(moment)
                # Asked for a unit: the row is locked (exclusive) before it is checked, so a
                # reservation that read the old unit has committed its hold and is seen by the
                # check, never missed.
                lock = self._lock_budgets_sql(True) if wanted_unit is not None else ""
                cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?" + lock, (scope, window))
                before = cur.fetchone()
                previous = None if before is None else budget_from_row(before)
                new_unit = wanted_unit or (previous.unit if previous is not None else DEFAULT_UNIT)
                if previous is not None and new_unit != previous.unit:
                    self._check_unit_change(cur, previous, new_unit)
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
                        tz,
                        to_storage(lim),
                        None if mpr is None else to_storage(mpr),
                        json.dumps([str(t) for t in marks]),
                        now,
                        now,
                        new_unit,
                        checked,
                    ),
                )
                if cur.rowcount != 1:  # its unit changed since it was read: read and check again
                    raise Conflict(f"the {window} budget of {scope} changed unit meanwhile")
                cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?", (scope, window))
                budget = budget_from_row(cur.fetchone())
                for hook in self.hooks:
                    hook.after_budget_set(cur, moment, budget, previous)
                return budget

        return self._retrying(run)

    @staticmethod
    def _check_unit_change(cur: Cursor, budget: Budget, unit: str) -> None:
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

    def budgets(self, scope: str | None = None) -> list[Budget]:
        """Every budget, or those of one scope, in a stable order."""
        with self._transaction() as cur:
            if scope is None:
                cur.execute(BUDGET_SELECT + " ORDER BY scope, id")
            else:
                cur.execute(BUDGET_SELECT + " WHERE scope = ? ORDER BY id", (validate_scope(scope),))
            return [budget_from_row(row) for row in cur.fetchall()]

    def get_budget(self, scope: str, window: str) -> Budget | None:
        window = validate_window(window)
        with self._transaction() as cur:
            cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?", (validate_scope(scope), window))
            row = cur.fetchone()
            return None if row is None else budget_from_row(row)

    def delete_budget(self, scope: str, window: str) -> bool:
        """Remove a budget and its window counters; charges stay. True if one was deleted."""
        window = validate_window(window)
        scope = validate_scope(scope)

        def run() -> bool:
            with self._transaction() as cur:
                cur.execute(  # the budget first, as reservations lock it: none is cut short
                    "SELECT id FROM budgets WHERE scope = ? AND period = ?" + self._lock_budgets_sql(True),
                    (scope, window),
                )
                row = cur.fetchone()
                if row is None:
                    return False
                cur.execute("DELETE FROM budget_windows WHERE budget_id = ?", (row[0],))
                cur.execute("DELETE FROM budgets WHERE id = ?", (row[0],))
                self.outbox.budget_deleted(cur, self._now(cur), int(row[0]))
                return True

        return self._retrying(run)

    def _retrying(self, operation: Callable[[], T]) -> T:
        for _ in range(RETRIES - 1):
            try:
                result = operation()
            except Conflict:
                continue
            self._committed()
            return result
        try:
            result = operation()
        except Conflict as exc:
            raise StorageError(f"gave up after {RETRIES} conflicting attempts: {exc}") from None
        self._committed()
        return result

    def _committed(self) -> None:
        """After a transaction committed: let the outbox wake its listeners (deliverers)."""
        self.outbox.after_commit()

    def _wants_settle_states(self, held: int, spent: int) -> bool:
        """Whether a settlement must look up its windows' counters for the hooks: the outbox
        needs them only when the settlement raised the level (``spent > held``)."""
        for hook in self.hooks:
            if not getattr(hook, "watches_budgets", True):
                continue
            if hook is self.outbox and spent <= held:
                continue
            return True
        return False

    # -- internals -------------------------------------------------------------------------
