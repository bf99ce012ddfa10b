"""Read-only questions to the ledger: reservations, usage, charges, totals."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ..budgets import UNITS, Usage, validate_scope, validate_window, window_at
from ..errors import ValidationError
from ..money import from_storage
from ..text import bad_text, clean_text
from ._rows import (
    ALERT_SELECT,
    BUDGET_SELECT,
    CHARGE_SELECT,
    RES_SELECT,
    Cursor,
    alert_from_row,
    budget_from_row,
    charge_from_row,
    reservation_from_row,
    to_ms,
)
from .core import LedgerCore
from .models import RESERVED, STATUSES, AlertRecord, Charge, PromptCost, Reservation

__all__ = ["ALERT_STATUSES", "LedgerQueries"]

ALERT_STATUSES = ("pending", "delivered")
"""What an alert of the outbox can be: waiting for delivery, or delivered."""


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be a whole number of at least 1, not {limit!r}")


_PAGE = 1000
"""Rows read per query when every reservation is asked for (``limit=None``)."""

MAX_SQL_INT = 2**63 - 1
"""The largest integer both backends store; a larger row limit means every row."""


class LedgerQueries(LedgerCore):
    """Queries; every one runs in a transaction so it sees one consistent state."""

    def _reservation_by(self, cur: Cursor, column: str, value: str) -> Reservation | None:
        cur.execute(RES_SELECT + f" WHERE {column} = ?", (value,))  # fixed column names only
        row = cur.fetchone()
        return None if row is None else reservation_from_row(row)

    def get_reservation(self, ref: str) -> Reservation | None:
        """A reservation by id or by idempotency key."""
        if isinstance(ref, str) and bad_text(ref) is not None:
            return None  # no id or key holds text PostgreSQL cannot store (such keys are refused)
        with self._transaction() as cur:
            return self._reservation_by(cur, "id", ref) or self._reservation_by(cur, "idempotency_key", ref)

    def reservation_for_task(self, task_id: str) -> Reservation | None:
        """The reservation a Kling task was attached to (task ids are stored as
        :meth:`attach_task` cleaned them, and looked up the same way)."""
        with self._transaction() as cur:
            return self._reservation_by(cur, "task_id", clean_text(task_id))

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
            want = _PAGE if limit is None else min(_PAGE, limit - len(out))
            sql = RES_SELECT + (" WHERE " + " AND ".join(conds) if conds else "")
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            with self._transaction() as cur:
                cur.execute(sql, [*page_params, want])
                rows = cur.fetchall()
            out.extend(reservation_from_row(row) for row in rows)
            if len(rows) < want or (limit is not None and len(out) >= limit):
                return out
            last = out[-1]
            after = (to_ms(last.created_at), last.id)

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
        out = []
        with self._transaction() as cur:
            moment = at or self._now(cur)
            if scope is None:
                cur.execute(BUDGET_SELECT + " ORDER BY scope, id")
            else:
                cur.execute(BUDGET_SELECT + " WHERE scope = ? ORDER BY id", (validate_scope(scope),))
            for b in [budget_from_row(row) for row in cur.fetchall()]:
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
            cond, value = self._scopes_contain("c.scopes", validate_scope(scope))
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
        with self._transaction() as cur:
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
            cond, value = self._scopes_contain("scopes", validate_scope(scope))
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
        with self._transaction() as cur:
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
        with self._transaction() as cur:
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

    def alerts(
        self,
        *,
        status: str | None = None,
        scope: str | None = None,
        include_cleared: bool = True,
        limit: int = 500,
    ) -> list[AlertRecord]:
        """Alerts from the outbox, newest first (``status='pending'`` for the undelivered,
        ``'delivered'`` for the others). A ``limit`` larger than storage integers hold means all."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a whole number of at least 1, not {limit!r}")
        if status is not None and status not in ALERT_STATUSES:
            raise ValidationError(f"alert status {status!r} is unknown; allowed: {', '.join(ALERT_STATUSES)}")
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if scope is not None:
            where.append("scope = ?")
            params.append(validate_scope(scope))
        if not include_cleared:
            where.append("cleared_at IS NULL")
        sql = ALERT_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(min(limit, MAX_SQL_INT))
        with self._transaction() as cur:
            cur.execute(sql, params)
            return [alert_from_row(row) for row in cur.fetchall()]
