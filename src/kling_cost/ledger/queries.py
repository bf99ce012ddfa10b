"""Read-only questions to the ledger as a store (``ledger.queries``): budgets and their usage,
reservations, charges, prompt costs, totals, and the raw charges reports read when the rollup
cannot answer.

Every query runs in a transaction of the ledger's seam, so it sees one consistent state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..budgets import UNITS, Budget, Usage, validate_scope, validate_window, window_at
from ..errors import ValidationError
from ..money import from_storage
from ..text import bad_text, clean_text
from ..timestamps import to_ms
from .backend import Cursor
from .models import RESERVED, STATUSES, Charge, PromptCost, Reservation
from .records import (
    BUDGET_SELECT,
    CHARGE_SELECT,
    RES_SELECT,
    BudgetRow,
    budget_row,
    charge_from_row,
    reservation_by,
    reservation_row,
)

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["Held", "Queries"]


@dataclass(frozen=True)
class Held:
    """The live holds of one unit (:meth:`Queries.held`)."""

    count: int
    """Reservations still held."""
    amount: Decimal
    """What they hold, in the unit."""


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be a whole number of at least 1, not {limit!r}")


PAGE = 1000
"""Rows read per query when every reservation is asked for (``limit=None``)."""


def _budget_rows(cur: Cursor, scope: str | None = None, window: str | None = None) -> list[BudgetRow]:
    if scope is None:
        cur.execute(BUDGET_SELECT + " ORDER BY scope, id")
    elif window is None:
        cur.execute(BUDGET_SELECT + " WHERE scope = ? ORDER BY id", (scope,))
    else:
        cur.execute(BUDGET_SELECT + " WHERE scope = ? AND period = ?", (scope, window))
    return [budget_row(row) for row in cur.fetchall()]


class Queries:
    """One ledger's read-only questions."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # -- budgets ---------------------------------------------------------------------------------

    def budgets(self, scope: str | None = None) -> list[Budget]:
        """Every budget, or those of one scope, in a stable order."""
        wanted = None if scope is None else validate_scope(scope)
        with self.ledger.transaction(snapshot=True) as cur:
            rows = _budget_rows(cur, wanted)
        return [row.to_budget() for row in rows]

    def get_budget(self, scope: str, window: str) -> Budget | None:
        """The ``window`` budget of ``scope``, or None."""
        window = validate_window(window)
        with self.ledger.transaction(snapshot=True) as cur:
            rows = _budget_rows(cur, validate_scope(scope), window)
        return rows[0].to_budget() if rows else None

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
        if at is not None and at.tzinfo is None:
            raise ValidationError("at must be timezone-aware")
        wanted = None if scope is None else validate_scope(scope)
        out = []
        with self.ledger.transaction(snapshot=True) as cur:
            moment = at or cur.now
            for b in _budget_rows(cur, wanted):
                w = window_at(b.window, b.tz, moment)
                cur.execute(
                    "SELECT used_milli, reserved_milli FROM budget_windows "
                    "WHERE budget_id = ? AND window_key = ?",
                    (b.id, w.key),
                )
                row = cur.fetchone() or (0, 0)
                out.append(Usage(b.to_budget(), w, from_storage(row[0]), from_storage(row[1])))
        return out

    # -- reservations ----------------------------------------------------------------------------

    def get_reservation(self, ref: str) -> Reservation | None:
        """A reservation by id or by idempotency key."""
        if isinstance(ref, str) and bad_text(ref) is not None:
            return None  # no id or key holds text PostgreSQL cannot store (such keys are refused)
        with self.ledger.transaction(snapshot=True) as cur:
            found = reservation_by(cur, "id", ref) or reservation_by(cur, "idempotency_key", ref)
        return None if found is None else found.to_reservation()

    def reservation_for_task(self, task_id: str) -> Reservation | None:
        """The reservation a Kling task was attached to (task ids are stored as
        :meth:`~.ledger.Ledger.attach_task` cleaned them, and looked up the same way)."""
        with self.ledger.transaction(snapshot=True) as cur:
            found = reservation_by(cur, "task_id", clean_text(task_id))
        return None if found is None else found.to_reservation()

    def reservations(
        self, status: str | None = None, limit: int | None = 1000, *, since: datetime | None = None
    ) -> list[Reservation]:
        """Reservations, newest first, optionally of one status (``reserved`` = pending) and
        made at or after ``since``. ``limit=None`` reads every one, a page at a time."""
        if status is not None and status not in STATUSES:
            raise ValidationError(f"status {status!r} is unknown; allowed: {', '.join(STATUSES)}")
        if limit is not None:
            _check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if since is not None:
            where.append("created_at >= ?")
            params.append(to_ms(since))
        out: list[Reservation] = []
        after: tuple[int, str] | None = None  # keyset: (created_at, id) of the last row read
        while True:
            conds = list(where)
            page_params = list(params)
            if after is not None:
                conds.append("(created_at < ? OR (created_at = ? AND id < ?))")
                page_params += [after[0], after[0], after[1]]
            want = PAGE if limit is None else min(PAGE, limit - len(out))
            sql = RES_SELECT + (" WHERE " + " AND ".join(conds) if conds else "")
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            with self.ledger.transaction(snapshot=True) as cur:
                cur.execute(sql, [*page_params, want])
                rows = [reservation_row(row) for row in cur.fetchall()]
            out.extend(row.to_reservation() for row in rows)
            if len(rows) < want or (limit is not None and len(out) >= limit):
                return out
            after = (rows[-1].created_at_ms, rows[-1].id)

    def charges(
        self,
        scope: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        over_limit: bool = False,
    ) -> list[Charge]:
        """Settled charges, oldest first, by reservation time, optionally of one scope;
        ``over_limit=True``: only those that took a budget past its limit (``overage > 0``)."""
        where: list[str] = []
        params: list[Any] = []
        sql = CHARGE_SELECT
        if over_limit:
            where.append("c.overage_milli > 0")
        if scope is not None:
            cond, value = self.ledger.backend.scopes_contain("c.scopes", validate_scope(scope))
            where.append(cond)
            params.append(value)
        if since is not None:
            where.append("c.created_at >= ?")
            params.append(to_ms(since))
        if until is not None:
            where.append("c.created_at < ?")
            params.append(to_ms(until))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.created_at, c.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(sql, params)
            return [charge_from_row(row) for row in cur.fetchall()]

    def prompt_costs(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        scope: str | None = None,
        limit: int = 5,
    ) -> list[PromptCost]:
        """The ``limit`` costliest prompts (grouped by prompt hash) of the charges reserved in
        ``[since, until)``, per unit (units first, never ranked across units): what each cost,
        how many charges carried it, its preview and its models. Prompts that cost nothing
        (failed, cached) and charges without a prompt are left out."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise ValidationError(f"limit must be a whole number between 1 and 100, not {limit!r}")
        where = ["prompt_hash IS NOT NULL"]
        params: list[Any] = []
        if scope is not None:
            cond, value = self.ledger.backend.scopes_contain("scopes", validate_scope(scope))
            where.append(cond)
            params.append(value)
        if since is not None:
            where.append("created_at >= ?")
            params.append(to_ms(since))
        if until is not None:
            where.append("created_at < ?")
            params.append(to_ms(until))
        cond = " AND ".join(where)
        # The costliest prompts of each unit (one pass over the period), then the models and
        # preview of those few (a second, narrower one); faster than one nested window query.
        top_sql = (
            "SELECT unit, prompt_hash, total, n FROM ("
            " SELECT unit, prompt_hash, SUM(actual_milli) AS total, COUNT(*) AS n, ROW_NUMBER() OVER"
            "  (PARTITION BY unit ORDER BY SUM(actual_milli) DESC, prompt_hash) AS rk"
            f" FROM charges WHERE {cond} GROUP BY unit, prompt_hash HAVING SUM(actual_milli) > 0"
            ") AS ranked WHERE rk <= ?"
        )
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(top_sql, [*params, limit])
            totals = {(str(u), str(h)): (int(total), int(n)) for u, h, total, n in cur.fetchall()}
            if not totals:
                return []
            hashes = sorted({h for _, h in totals})
            marks = ", ".join("?" for _ in hashes)  # placeholders only; every value is bound
            cur.execute(
                "SELECT unit, prompt_hash, model, MAX(prompt_preview), SUM(actual_milli) FROM charges "
                f"WHERE {cond} AND prompt_hash IN ({marks}) GROUP BY unit, prompt_hash, model",
                [*params, *hashes],
            )
            details = cur.fetchall()
        models: dict[tuple[str, str], list[tuple[int, str]]] = {}
        previews: dict[tuple[str, str], str] = {}
        for unit, h, model, preview, spent in details:
            key = (str(unit), str(h))
            if key not in totals:
                continue  # the same prompt, but not among the costliest in this unit
            if model is not None:
                models.setdefault(key, []).append((-int(spent), str(model)))
            if preview is not None:
                previews[key] = max(previews.get(key, ""), str(preview))
        rank = {u: i for i, u in enumerate(UNITS)}
        order = sorted(totals, key=lambda k: (rank.get(k[0], len(rank)), k[0], -totals[k][0], k[1]))
        return [
            PromptCost(
                prompt_hash=h,
                prompt_preview=previews.get((u, h)),
                unit=u,
                actual=from_storage(totals[(u, h)][0]),
                charges=totals[(u, h)][1],
                models=tuple(m for _, m in sorted(models.get((u, h), []))),
            )
            for u, h in order
        ]

    def totals(self) -> dict[str, dict[str, Decimal]]:
        """Sums over the whole ledger (a consistency check), per unit, never added across
        units: ``{"credits": {"charged": ..., "reserved": ...}, "units": {...}}`` with the
        committed actuals and the live holds of each unit that has any row."""
        out: dict[str, dict[str, Decimal]] = {}
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute("SELECT unit, COALESCE(SUM(actual_milli), 0) FROM charges GROUP BY unit")
            charged = {str(u): int(v) for u, v in cur.fetchall()}
            cur.execute(
                "SELECT unit, COALESCE(SUM(amount_milli), 0) FROM reservations "
                "WHERE status = ? GROUP BY unit",
                (RESERVED,),
            )
            held = {str(u): int(v) for u, v in cur.fetchall()}
        for unit in sorted({*charged, *held}):
            out[unit] = {
                "charged": from_storage(charged.get(unit, 0)),
                "reserved": from_storage(held.get(unit, 0)),
            }
        return out

    def held(self) -> dict[str, Held]:
        """Reservations still held (status ``reserved``), per unit: how many and how much, in one
        query. Every unit of :data:`~kling_cost.budgets.UNITS` is present (``0`` when none).
        Holds whose lease lapsed but that no sweep has reclaimed yet are counted, as the budget
        windows still count them."""
        out = {unit: Held(0, from_storage(0)) for unit in UNITS}
        with self.ledger.transaction(snapshot=True) as cur:
            # The literal status matches the partial index ``reservations_open``.
            cur.execute(
                "SELECT unit, COUNT(*), COALESCE(SUM(amount_milli), 0) FROM reservations "
                "WHERE status = 'reserved' GROUP BY unit"
            )
            for unit, count, milli in cur.fetchall():
                out[str(unit)] = Held(int(count), from_storage(int(milli)))
        return out

    # -- for reports ---------------------------------------------------------------------------

    def charge_span(self) -> tuple[int, int] | None:
        """(first, last) ``created_at`` (ms) of all charges, or None for an empty ledger."""
        with self.ledger.transaction(snapshot=True) as cur:
            # Two subqueries: each is one index probe (MIN and MAX together would scan it).
            cur.execute("SELECT (SELECT MIN(created_at) FROM charges), (SELECT MAX(created_at) FROM charges)")
            row = cur.fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def recent_charges(self, *, limit: int, scope: str | None = None) -> list[Charge]:
        """The ``limit`` latest charges (by reservation time), newest first."""
        sql = CHARGE_SELECT
        params: list[Any] = []
        if scope is not None:
            cond, value = self.ledger.backend.scopes_contain("c.scopes", scope)
            sql += " WHERE " + cond
            params.append(value)
        sql += " ORDER BY c.created_at DESC, c.id DESC LIMIT ?"
        params.append(int(limit))
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(sql, params)
            return [charge_from_row(row) for row in cur.fetchall()]

    def charge_facts(
        self, *, since: int | None, until: int | None, scope: str | None
    ) -> list[tuple[Any, ...]]:
        """Raw charges for reports that the rollup cannot answer, reserved in ``[since, until)``
        (ms): (created_at, status, estimate, actual, scopes JSON, model, mode, duration, audio,
        kind, unit), amounts in thousandths."""
        where: list[str] = []
        params: list[Any] = []
        if scope is not None:
            cond, value = self.ledger.backend.scopes_contain("scopes", scope)
            where.append(cond)
            params.append(value)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("created_at < ?")
            params.append(until)
        sql = (
            "SELECT created_at, status, estimate_milli, actual_milli, scopes, model, mode, duration, "
            "audio, kind, unit FROM charges" + (" WHERE " + " AND ".join(where) if where else "")
        )
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
