"""The report rollup: charges summed per (scope, grain, bucket, model, mode, unit), kept in
step with every settle.

Two grains, written by the same single upsert statement per settle (one multi-row
``VALUES``: one hour row and one day row per scope of the charge):

* ``GRAIN_HOUR`` (0): per UTC hour. Every time zone whose offset is a whole number of hours
  (almost all of them) has its local days, weeks and months made of whole UTC hours, so a
  report in any such zone can be answered from the rollup and never a single charge.
* ``GRAIN_DAY`` (1): per UTC day, 24 times fewer rows. A report in UTC (or over a period
  whose offset is 0) reads day rows only, plus hour rows at a period's ends that are not UTC
  midnights. In a zone with a whole-hour offset, each UTC day row is attributed to one local
  day and corrected by the hour rows that fall on the other side of the local midnight
  (whichever side of the day has fewer hours: Paris reads 1-2 hours a day, New York 4-5);
  see :mod:`kling_cost.ledger.rollup_read`.

Why not a second table: one ``INSERT ... ON CONFLICT`` can only touch one table, and the
per-commit cost must stay one statement. The grain leads the primary key, so a read of one
grain is one index range even across every scope.

Zones with a 30- or 45-minute offset (India, Nepal, Newfoundland, South Australia, ...) fall
back to the raw charges (see :mod:`kling_cost.reports`).

Each row holds, per settled status, a count, the sum of estimates and the sum of actuals, so
any grouping by status can be unfolded from it exactly. The ``unit`` (``units`` or
``credits``: what the charge's reservation counted) is part of the key, so amounts in
different units are never summed together; it comes last in the key, so a read of a grain,
a scope and a bucket range is one index range as before. :class:`RollupHook` upserts the rows
of a charge in one statement, inside the ledger's own transaction.

Ledgers created before this table existed: migration 3 leaves a ``backfill_upto`` marker (the
last charge id then); the first read rolls those charges up (:func:`ensure_backfilled`).
Migration 5 derived the day rows of existing ledgers from their hour rows; migration 8 added
the unit (rows written before it are ``units``, as were all charges then).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..budgets import UNITS
from ..errors import StorageError
from ._rows import CHARGE_SELECT, Cursor, charge_from_row
from .hooks import SettledCharge, WindowState
from .models import Charge

if TYPE_CHECKING:
    from ..budgets import Budget
    from .core import LedgerCore
    from .models import Reservation

__all__ = [
    "BUCKET_MS",
    "DAY_MS",
    "GRAIN_DAY",
    "GRAIN_HOUR",
    "KEY_COLUMNS",
    "STATUSES",
    "SUM_COLUMNS",
    "RollupHook",
    "charge_facts",
    "charge_span",
    "ensure_backfilled",
    "recent_charges",
    "rollup_rows",
    "rollup_values",
]

BUCKET_MS = 3_600_000
DAY_MS = 86_400_000
STATUSES = ("succeeded", "failed", "cache_hit")
_PREFIX = {"succeeded": "s", "failed": "f", "cache_hit": "c"}
SUM_COLUMNS = tuple(f"{_PREFIX[s]}_{m}" for s in STATUSES for m in ("n", "est", "act"))
"""``s_n, s_est, s_act, f_n, ...``: count, estimates and actuals (thousandths) per status."""

GRAIN_HOUR = 0
GRAIN_DAY = 1
KEY_COLUMNS = ("scope", "grain", "bucket", "model", "mode", "unit")
"""The key of a rollup row, in the order :func:`rollup_rows` gives it (then the sums)."""

_UPSERT_HEAD = f"INSERT INTO report_rollup ({', '.join((*KEY_COLUMNS, *SUM_COLUMNS))}) VALUES "
_ROW_MARKS = "(" + ", ".join("?" * (len(KEY_COLUMNS) + len(SUM_COLUMNS))) + ")"
_UPSERT_TAIL = " ON CONFLICT (grain, scope, bucket, model, mode, unit) DO UPDATE SET " + ", ".join(
    f"{c} = report_rollup.{c} + excluded.{c}" for c in SUM_COLUMNS
)
Values = tuple[int, str, str, str, list[int]]
"""One charge as the rollup sees it: (hour bucket, model, mode, unit, sums)."""


def bucket_of(ms: int) -> int:
    """The start of the UTC hour containing ``ms``."""
    return ms - ms % BUCKET_MS


def rollup_values(
    status: str,
    created_at_ms: int,
    estimate: int,
    actual: int,
    model: str | None,
    mode: str | None,
    unit: str,
) -> Values:
    """(hour bucket, model, mode, unit, sums) of one charge; ``''`` stands for a missing model
    or mode. ``unit``: what the charge counts (``units`` or ``credits``)."""
    if status not in _PREFIX:
        raise StorageError(f"charge status {status!r} is unknown to the report rollup")
    if unit not in UNITS:
        raise StorageError(f"charge unit {unit!r} is unknown to the report rollup")
    sums = [0] * len(SUM_COLUMNS)
    base = STATUSES.index(status) * 3
    sums[base], sums[base + 1], sums[base + 2] = 1, estimate, actual
    return bucket_of(created_at_ms), model or "", mode or "", unit, sums


def rollup_rows(scopes: Sequence[str], values: Values) -> list[tuple[Any, ...]]:
    """The rows one charge adds to: (*:data:`KEY_COLUMNS`, *sums), an hour row and a day row
    per scope (what :func:`upsert` writes; the benchmark builds its rollup with it)."""
    bucket, model, mode, unit, sums = values
    day = bucket - bucket % DAY_MS
    out: list[tuple[Any, ...]] = []
    for scope in scopes:
        out.append((scope, GRAIN_HOUR, bucket, model, mode, unit, *sums))
        out.append((scope, GRAIN_DAY, day, model, mode, unit, *sums))
    return out


def upsert(cur: Cursor, scopes: Sequence[str], values: Values) -> None:
    """Add one charge to the rollup rows of each of its scopes, both grains (one statement)."""
    rows = rollup_rows(scopes, values)
    if not rows:
        return
    params: list[Any] = []
    for row in rows:
        params.extend(row)
    cur.execute(_UPSERT_HEAD + ", ".join([_ROW_MARKS] * len(rows)) + _UPSERT_TAIL, params)


class RollupHook:
    """Keeps ``report_rollup`` in step with ``charges``, in the same transaction."""

    watches_budgets = False
    """It needs the charge, not the budget windows' counters (saves a query per settle)."""

    def after_reserve(
        self, cur: Cursor, now: datetime, reservation: Reservation, states: Sequence[WindowState]
    ) -> None:
        return None

    def after_settle(
        self, cur: Cursor, now: datetime, charge: SettledCharge, states: Sequence[WindowState]
    ) -> None:
        values = rollup_values(
            charge.status,
            charge.created_at_ms,
            charge.estimate_milli,
            charge.actual_milli,
            charge.model,
            charge.mode,
            charge.unit,
        )
        upsert(cur, charge.scopes, values)

    def after_budget_set(self, cur: Cursor, now: datetime, budget: Budget, previous: Budget | None) -> None:
        return None

    def after_refusal(self, cur: Cursor, now: datetime, refusal: Any, scopes: Sequence[str]) -> None:
        return None


_backfilled: weakref.WeakSet[LedgerCore] = weakref.WeakSet()


def ensure_backfilled(ledger: LedgerCore) -> None:
    """Roll up the charges recorded before the rollup existed (once; a no-op afterwards)."""
    if ledger in _backfilled:
        return
    with ledger._transaction() as cur:
        cur.execute("SELECT value FROM report_rollup_meta WHERE name = 'backfill_upto'")
        row = cur.fetchone()
        if row is not None:
            cur.execute("DELETE FROM report_rollup_meta WHERE name = 'backfill_upto'")
            if cur.rowcount == 1:  # this transaction claimed it (PostgreSQL: concurrent readers)
                cur.execute(
                    "SELECT status, created_at, estimate_milli, actual_milli, model, mode, unit, "
                    "scopes FROM charges WHERE id <= ?",
                    (int(row[0]),),
                )
                for status, created, est, act, model, mode, unit, scopes in cur.fetchall():
                    values = rollup_values(status, int(created), int(est), int(act), model, mode, unit)
                    upsert(cur, _scopes(scopes), values)
    _backfilled.add(ledger)


def _scopes(raw: str) -> list[str]:
    return [str(s) for s in json.loads(raw)]


def charge_span(ledger: LedgerCore) -> tuple[int, int] | None:
    """(first, last) ``created_at`` of all charges, or None for an empty ledger."""
    with ledger._transaction() as cur:
        # Two subqueries: each is one index probe (MIN and MAX together would scan it).
        cur.execute("SELECT (SELECT MIN(created_at) FROM charges), (SELECT MAX(created_at) FROM charges)")
        row = cur.fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


def recent_charges(ledger: LedgerCore, *, limit: int, scope: str | None = None) -> list[Charge]:
    """The ``limit`` latest charges (by reservation time), newest first."""
    sql = CHARGE_SELECT
    params: list[Any] = []
    if scope is not None:
        cond, value = ledger._scopes_contain("c.scopes", scope)
        sql += " WHERE " + cond
        params.append(value)
    sql += " ORDER BY c.created_at DESC, c.id DESC LIMIT ?"
    params.append(int(limit))
    with ledger._transaction() as cur:
        cur.execute(sql, params)
        return [charge_from_row(row) for row in cur.fetchall()]


def charge_facts(
    ledger: LedgerCore, *, since: int | None, until: int | None, scope: str | None
) -> list[tuple[Any, ...]]:
    """Raw charges for reports that the rollup cannot answer: (created_at, status, estimate,
    actual, scopes JSON, model, mode, duration, audio, kind, unit)."""
    where: list[str] = []
    params: list[Any] = []
    if scope is not None:
        cond, value = ledger._scopes_contain("scopes", scope)
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
    with ledger._transaction() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())
