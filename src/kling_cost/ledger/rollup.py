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
of a charge in one statement, inside the ledger's own transaction; the store that reads them
is :class:`~.rollup_store.RollupStore` (``ledger.rollup``).

On PostgreSQL (migration 13) a settle notes its charge in ``rollup_pending`` instead, and a
*fold* adds the noted charges to these rows before every read and in the background
(:mod:`.rollup_fold`, which says why). On SQLite (migration 15) a settle writes only its
charge, marked to wait for a fold, which adds every charge above a watermark
(:mod:`.rollup_mark`, which says why).

Ledgers created before this table existed: migration 3 leaves a ``backfill_upto`` marker (the
last charge id then); the first read rolls those charges up
(:meth:`~.rollup_store.RollupStore.ensure_backfilled`).
Migration 5 derived the day rows of existing ledgers from their hour rows; migration 8 added
the unit (rows written before it are ``units``, as were all charges then).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..budgets import UNITS
from ..errors import StorageError
from .hooks import Refusal, SettledCharge, WindowState

if TYPE_CHECKING:
    from .backend import Cursor
    from .records import BudgetRow, ReservationRow

__all__ = [
    "BUCKET_MS",
    "DAY_MS",
    "GRAIN_DAY",
    "GRAIN_HOUR",
    "KEY_COLUMNS",
    "STATUSES",
    "SUM_COLUMNS",
    "RollupHook",
    "bucket_of",
    "rollup_rows",
    "rollup_values",
    "sums_sql",
    "upsert",
    "upsert_rows",
    "upsert_statement",
]

BUCKET_MS = 3_600_000
DAY_MS = 86_400_000
STATUSES = ("succeeded", "failed", "cache_hit")
_PREFIX = {"succeeded": "s", "failed": "f", "cache_hit": "c"}
SUM_COLUMNS = tuple(f"{_PREFIX[s]}_{m}" for s in STATUSES for m in ("n", "est", "act"))
"""``s_n, s_est, s_act, f_n, ...``: count, estimates and actuals (thousandths) per status."""

GRAIN_HOUR = 0
GRAIN_DAY = 1
KEY_COLUMNS = ("scope", "grain", "bucket", "model", "mode", "unit", "shard")
"""The key of a rollup row, in the order :func:`rollup_rows` gives it (then the sums). The
``shard`` (migration 12) spreads one group over several rows on PostgreSQL's one-statement
path (see :data:`~.schema_fast.SHARDS`); written here, it is 0. Reads sum the shards."""

_UPSERT_HEAD = f"INSERT INTO report_rollup ({', '.join((*KEY_COLUMNS, *SUM_COLUMNS))}) VALUES "
_ROW_MARKS = "(" + ", ".join("?" * (len(KEY_COLUMNS) + len(SUM_COLUMNS))) + ")"
_UPSERT_TAIL = " ON CONFLICT (grain, scope, bucket, model, mode, unit, shard) DO UPDATE SET " + ", ".join(
    f"{c} = report_rollup.{c} + excluded.{c}" for c in SUM_COLUMNS
)
Values = tuple[int, str, str, str, list[int]]
"""One charge as the rollup sees it: (hour bucket, model, mode, unit, sums)."""


def sums_sql() -> str:
    """The nine sums of charge rows ``c`` in SQL (count, estimate, actual per status), named
    as :data:`SUM_COLUMNS`: what a fold adds, on either backend."""
    parts = []
    for status in STATUSES:
        when = f"CASE WHEN c.status = '{status}' THEN"
        parts += [f"{when} 1 ELSE 0 END", f"{when} c.estimate_milli ELSE 0 END"]
        parts.append(f"{when} c.actual_milli ELSE 0 END")
    return ", ".join(f"SUM({expr}) AS {col}" for expr, col in zip(parts, SUM_COLUMNS, strict=True))


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
        out.append((scope, GRAIN_HOUR, bucket, model, mode, unit, 0, *sums))
        out.append((scope, GRAIN_DAY, day, model, mode, unit, 0, *sums))
    return out


def upsert(cur: Cursor, scopes: Sequence[str], values: Values) -> None:
    """Add one charge to the rollup rows of each of its scopes, both grains (one statement)."""
    upsert_rows(cur, rollup_rows(scopes, values))


def upsert_rows(cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add ``rows`` (as :func:`rollup_rows` makes them; no key twice) in one statement."""
    if rows:
        cur.execute(*upsert_statement(rows))


def upsert_statement(rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """The statement adding ``rows`` (at least one) and its parameters."""
    params: list[Any] = []
    for row in rows:
        params.extend(row)
    sql = _UPSERTS.get(len(rows))
    if sql is None:
        sql = _UPSERTS[len(rows)] = _UPSERT_HEAD + ", ".join([_ROW_MARKS] * len(rows)) + _UPSERT_TAIL
    return sql, params


_UPSERTS: dict[int, str] = {}
"""Number of rows -> the upsert statement writing them (few distinct: two per scope; a fold's
chunks, up to 500)."""


class RollupHook:
    """Keeps ``report_rollup`` in step with ``charges``, in the same transaction: adds the
    charge to its rows, or with ``noted`` (PostgreSQL), notes it in ``rollup_pending`` for a
    fold (:mod:`.rollup_fold`) and calls ``noted()`` (nothing waits for the fold)."""

    watches_budgets = False
    """It needs the charge, not the budget windows' counters (saves a query per settle)."""

    def __init__(self, noted: Callable[[], None] | None = None) -> None:
        self.noted = noted
        self.deferred = False
        """SQLite at migration 15: the settle's charge is left to a fold (:mod:`.rollup_mark`),
        ``noted`` is called (set by :meth:`~.rollup_store.RollupStore.defer`)."""

    def after_reserve(
        self, cur: Cursor, now: datetime, reservation: ReservationRow, states: Sequence[WindowState]
    ) -> None:
        return None

    def after_settle(
        self, cur: Cursor, now: datetime, charge: SettledCharge, states: Sequence[WindowState]
    ) -> None:
        noted = self.noted
        if self.deferred or (noted is not None and charge.id is not None):  # a fold adds it
            if charge.status not in _PREFIX or charge.unit not in UNITS:  # refused now, not by a fold
                rollup_values(charge.status, 0, 0, 0, None, None, charge.unit)
            if not self.deferred:  # PostgreSQL notes it; SQLite's fold finds it above its watermark
                cur.execute("INSERT INTO rollup_pending (charge_id) VALUES (?)", (charge.id,))
            if noted is not None:
                noted()
            return
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

    def after_budget_set(
        self, cur: Cursor, now: datetime, budget: BudgetRow, previous: BudgetRow | None
    ) -> None:
        return None

    def after_refusal(self, cur: Cursor, now: datetime, refusal: Refusal, scopes: Sequence[str]) -> None:
        return None
