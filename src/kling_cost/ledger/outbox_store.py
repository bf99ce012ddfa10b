"""The alert outbox as a store of the ledger (``ledger.outbox``): the ``alerts`` table.

Writing: its :attr:`OutboxStore.writer` (:class:`~.outbox.AlertOutbox`) is one of the
ledger's hooks and writes threshold crossings inside the ledger's own transactions.
Reading and delivery: list alerts, claim due rows, record results, clear ended windows. All
of it is SQL on the ``alerts`` table, so it lives with the ledger (one place for SQL);
:mod:`kling_cost.alerts` drives it and never runs SQL itself. A claim is a short transaction
that stamps due rows with a random token and pushes ``next_attempt_at`` one lease ahead:
other deliverers (threads, processes, machines, on SQLite or PostgreSQL) skip claimed rows,
and a deliverer that dies mid-send leaves its rows due again once the lease ends. Nothing is
kept in memory: a restarted deliverer finds everything in the table.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..budgets import DEFAULT_UNIT, Budget, validate_scope, window_at
from ..errors import ValidationError
from ..money import from_storage, to_storage
from ..timestamps import to_ms
from .backend import Cursor
from .models import AlertRecord
from .outbox import PACK_BUDGET_ID, AlertOutbox, clear_alerts
from .records import ALERT_SELECT, BUDGET_SELECT, alert_from_row, budget_row

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["ALERT_STATUSES", "PHASE_ALERT", "PHASE_RESOLVED", "Consumer", "OutboxStore"]

ALERT_STATUSES = ("pending", "delivered")
"""What an alert of the outbox can be: waiting for delivery, or delivered."""

MAX_SQL_INT = 2**63 - 1
"""The largest integer both backends store; a larger row limit means every row."""

PHASE_ALERT = "alert"
PHASE_RESOLVED = "resolved"

_DUE = (
    "((status = 'pending') OR (resolved_status = 'pending' AND status = 'delivered')) "
    "AND next_attempt_at <= ?"
)


@dataclass(frozen=True)
class Consumer:
    """What consumed a window: a model/mode pair or another scope, with its charges."""

    by: str
    """``model`` (``name`` is ``model/mode``) or ``scope``."""
    name: str
    amount: Decimal
    count: int

    def to_dict(self) -> dict[str, object]:
        return {"by": self.by, "name": self.name, "amount": str(self.amount), "count": self.count}


class OutboxStore:
    """One ledger's alert outbox: its writer hook, its listeners, its reads and deliveries."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.writer = AlertOutbox()
        """The hook that writes crossings (installed in ``ledger.hooks`` by the ledger)."""

    @property
    def listeners(self) -> list[Callable[[], None]]:
        """Called (in the committing thread) after a transaction that wrote or cleared an
        alert has committed; a deliverer appends itself to wake up."""
        return self.writer.listeners

    def after_commit(self) -> None:
        """Called by the ledger after each committed transaction (see :attr:`listeners`)."""
        self.writer.after_commit()

    def alerts(
        self,
        *,
        status: str | None = None,
        scope: str | None = None,
        include_cleared: bool = True,
        limit: int = 500,
    ) -> list[AlertRecord]:
        """Alerts, newest first (``status='pending'`` for the undelivered, ``'delivered'``
        for the others). A ``limit`` larger than storage integers hold means all."""
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
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(sql, params)
            return [alert_from_row(row) for row in cur.fetchall()]

    def claim(self, now: datetime, lease: timedelta, limit: int) -> tuple[str, list[AlertRecord]]:
        """Claim up to ``limit`` due rows for one lease; returns the claim token and the rows."""
        token = secrets.token_hex(12)
        now_ms = to_ms(now)
        until = to_ms(now + lease)
        with self.ledger.transaction() as cur:
            cur.execute(
                "UPDATE alerts SET claim = ?, next_attempt_at = ?, attempts = attempts + 1 "
                f"WHERE id IN (SELECT id FROM alerts WHERE {_DUE} ORDER BY next_attempt_at, id "
                f"LIMIT ?) AND {_DUE}",
                (token, until, now_ms, int(limit), now_ms),
            )
            if cur.rowcount == 0:
                return token, []
            cur.execute(ALERT_SELECT + " WHERE claim = ? ORDER BY created_at, id", (token,))
            return token, [alert_from_row(row) for row in cur.fetchall()]

    def finish(
        self,
        alert: AlertRecord,
        token: str,
        now: datetime,
        *,
        sent_to: Sequence[str],
        delivered: bool,
        resolved: str | None,
        error: str | None,
        retry_at: datetime,
    ) -> bool:
        """Record the outcome of a claimed row and release the claim. False if the claim was
        lost meanwhile (the row was re-armed by a new crossing, or the lease ran out)."""
        now_ms = to_ms(now)
        with self.ledger.transaction() as cur:
            cur.execute(
                "UPDATE alerts SET status = ?, delivered_at = COALESCE(delivered_at, ?), "
                "resolved_status = COALESCE(?, resolved_status), "
                "resolved_at = CASE WHEN ? = 'delivered' THEN ? ELSE resolved_at END, "
                "last_error = ?, sent_to = ?, claim = NULL, next_attempt_at = ? "
                "WHERE id = ? AND claim = ?",
                (
                    "delivered" if delivered else "pending",
                    now_ms if delivered else None,
                    resolved,
                    resolved,
                    now_ms,
                    error,
                    json.dumps(sorted(set(sent_to))),
                    to_ms(retry_at) if error is not None else now_ms,
                    alert.id,
                    token,
                ),
            )
            return cur.rowcount == 1

    def write_alert(
        self,
        *,
        budget_id: int,
        scope: str,
        window: str,
        window_key: str,
        kind: str,
        threshold: str,
        used: Decimal,
        reserved: Decimal,
        limit: Decimal,
        message: str,
        details: dict[str, Any],
        now: datetime | None = None,
    ) -> AlertRecord | None:
        """Write one alert computed outside the ledger's own operations (a forecast, a pack
        expiry) into the outbox, in one transaction; returns the row when it was written, None
        when an active alert of the same (budget, window key, threshold) already exists (an
        alert fires once; a cleared row is re-armed).

        For a real budget (``budget_id`` other than
        :data:`~.outbox.PACK_BUDGET_ID`) nothing is written unless the budget still exists with
        this ``limit`` and ``window_key`` is its current window at ``now``: an evaluation that a
        budget change or a window rollover overtook never alerts."""
        with self.ledger.transaction() as cur:
            moment = now or cur.now
            if budget_id != PACK_BUDGET_ID:
                cur.execute(BUDGET_SELECT + " WHERE id = ?", (budget_id,))
                found = cur.fetchone()
                if found is None:
                    return None
                budget = budget_row(found)
                if budget.limit_milli != to_storage(limit):
                    return None
                if window_at(budget.window, budget.tz, moment).key != window_key:
                    return None
            row = (
                budget_id,
                validate_scope(scope),
                window,
                window_key,
                kind,
                threshold,
                to_storage(used),
                to_storage(reserved),
                to_storage(limit),
                message,
                json.dumps(details),
            )
            if not self.writer.write_row(cur, moment, row):
                return None
            cur.execute(
                ALERT_SELECT + " WHERE budget_id = ? AND window_key = ? AND threshold = ?",
                (budget_id, window_key, threshold),
            )
            return alert_from_row(cur.fetchone())

    def clear_alert(
        self, budget_id: int, window_key: str, threshold: str, now: datetime | None = None
    ) -> bool:
        """Clear one open alert (its "resolved" message is queued); False if none was open."""
        with self.ledger.transaction() as cur:
            done = clear_alerts(cur, to_ms(now or cur.now), budget_id, "one", (window_key, threshold)) > 0
            if done:
                self.writer.cleared()
            return done

    def clear_ended(self, now: datetime) -> int:
        """Clear the open alerts of windows that have ended (or of deleted budgets), and the
        resource-pack alerts of packs that have expired."""
        now_ms = to_ms(now)
        cleared = 0
        with self.ledger.transaction() as cur:
            cur.execute("SELECT DISTINCT budget_id FROM alerts WHERE cleared_at IS NULL")
            ids = [int(row[0]) for row in cur.fetchall()]
            for budget_id in ids:
                if budget_id == PACK_BUDGET_ID:
                    cleared += _clear_expired_packs(cur, now, now_ms)
                    continue
                cur.execute(BUDGET_SELECT + " WHERE id = ?", (budget_id,))
                row = cur.fetchone()
                if row is None:  # the budget was deleted: nothing of it can still apply
                    cleared += clear_alerts(cur, now_ms, budget_id, "all", ())
                    continue
                budget = budget_row(row)
                key = window_at(budget.window, budget.tz, now).key
                cleared += clear_alerts(cur, now_ms, budget_id, "older", (key,))
        return cleared

    def budget(self, budget_id: int) -> Budget | None:
        """The budget an alert names, or None when it was deleted since."""
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(BUDGET_SELECT + " WHERE id = ?", (budget_id,))
            row = cur.fetchone()
        return None if row is None else budget_row(row).to_budget()

    def top_consumers(
        self,
        scope: str,
        start: datetime | None,
        end: datetime | None,
        limit: int = 5,
        *,
        unit: str = DEFAULT_UNIT,
    ) -> list[Consumer]:
        """The biggest consumers of ``scope`` between ``start`` and ``end`` (charges by their
        reservation time): by model and mode, then by the other scopes the charges named.
        Only charges counted in ``unit`` (the budget's) are summed: units never mix."""
        cond, value = self.ledger.backend.scopes_contain("scopes", scope)
        where = ["status = 'succeeded'", "unit = ?", cond]
        params: list[object] = [unit, value]
        if start is not None:
            where.append("created_at >= ?")
            params.append(to_ms(start))
        if end is not None:
            where.append("created_at < ?")
            params.append(to_ms(end))
        cond = " WHERE " + " AND ".join(where)
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(
                "SELECT model, mode, COUNT(*), SUM(actual_milli) FROM charges"
                + cond
                + " GROUP BY model, mode ORDER BY SUM(actual_milli) DESC, model, mode LIMIT ?",
                (*params, int(limit)),
            )
            models = [
                Consumer(
                    "model", f"{row[0] or 'unknown'}/{row[1] or '-'}", from_storage(int(row[3])), int(row[2])
                )
                for row in cur.fetchall()
            ]
            cur.execute(
                "SELECT scopes, COUNT(*), SUM(actual_milli) FROM charges" + cond + " GROUP BY scopes", params
            )
            per_scope: dict[str, list[int]] = {}
            for raw, count, total in cur.fetchall():
                for other in json.loads(raw):
                    if other in (scope, "account"):
                        continue
                    slot = per_scope.setdefault(other, [0, 0])
                    slot[0] += int(count)
                    slot[1] += int(total)
        scopes = sorted(per_scope.items(), key=lambda item: (-item[1][1], item[0]))[:limit]
        return [*models, *(Consumer("scope", name, from_storage(t), c) for name, (c, t) in scopes)]


def _clear_expired_packs(cur: Cursor, now: datetime, now_ms: int) -> int:
    """Clear the open pack alerts whose pack has expired (``details["expires_at"]``)."""
    cur.execute(
        "SELECT window_key, threshold, details FROM alerts WHERE budget_id = ? AND cleared_at IS NULL",
        (PACK_BUDGET_ID,),
    )
    cleared = 0
    for key, threshold, raw in cur.fetchall():
        expires = json.loads(raw).get("expires_at")
        if isinstance(expires, str) and datetime.fromisoformat(expires) <= now:
            cleared += clear_alerts(cur, now_ms, PACK_BUDGET_ID, "one", (key, threshold))
    return cleared
