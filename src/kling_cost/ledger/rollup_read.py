"""Planning reads of the report rollup: sums per (local day, scope, unit, model, mode) from its
two grains, as one SQL statement (run by :meth:`~.rollup_store.RollupStore.sums`).

Every read groups by ``unit``: amounts in units and in credits are never added together.

A period is read as a few *reads*, all summed by one SQL statement (``UNION ALL`` under one
``GROUP BY``), never row by row in Python. For a span ``[start, end)`` that keeps one UTC
offset ``k`` (whole hours) in the report's zone, local day number ``(t + k) // day``:

* the hours before its first UTC midnight and after its last come from hour rows;
* the whole UTC days in between come from day rows. When ``k`` is a multiple of 24 h (UTC,
  or no time column at all), a UTC day is a local day and that is all.
* Otherwise each UTC day straddles two local days: its first ``24 - k'`` hours
  (``k' = k mod 24 h``) belong to one, its last ``k'`` hours to the next. The day row is
  attributed to the local day of one *anchor* hour, and the hours on the other side of the
  local midnight are moved: added to their own local day and subtracted from the anchor's.
  The anchor is the first hour when ``k' <= 12 h`` (the last ``k'`` hours move) and the last
  hour otherwise (the first ``24 - k'`` move), so at most 12 hour rows per day and model are
  read: Paris reads 1-2, New York 4-5, Tokyo 9 of them instead of 24.

The moved hours are looked up by key: ``bucket IN`` the hours of the window of every UTC day
of the span (day starts ``rollup_days`` x hour offsets ``rollup_steps``, two tiny recursive
CTEs), one primary-key probe per hour and scope. A join of the day starts with a bucket
*range* reads the same rows, but SQLite (3.38+) then builds a Bloom filter over all the
hour rows of the scope first, which costs more than the whole read. They are summed once per
(local day, group) into a CTE that is read twice: added to their own local day, subtracted
from the anchor's (``move`` days away). A scope grouping first lists its scopes from the day
rows (``rollup_scopes``), so no read ever scans the hour rows of the table. A group can end
up with all-zero sums after a move (its charges all moved away): such groups hold no charge
and are dropped, as the raw charges would never produce them.

Costs at 1,000,000 charges over a year (6 models x 2 modes, SQLite): ``day,model`` over 365
days reads 4,380 day rows in UTC instead of 105,000 hour rows; Paris adds 1-2 hours a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import StorageError
from .rollup import BUCKET_MS, DAY_MS, GRAIN_DAY, GRAIN_HOUR, SUM_COLUMNS

__all__ = ["Read", "Segment", "plan_reads", "sums_query"]


@dataclass(frozen=True)
class Segment:
    """``[start, end)`` in UTC ms during which the report's zone keeps one UTC offset (ms)."""

    start: int
    end: int
    offset: int


@dataclass(frozen=True)
class Read:
    """Rollup rows of ``grain`` with ``lo <= bucket < hi`` (None: unbounded).

    ``offset``: the day column is ``(bucket + offset) // day`` (None: no day column).
    ``window``: only the hours ``[d + a, d + b)`` of each UTC day ``d`` of ``[lo, hi)``, which
    *move*: each is added to its own local day and subtracted from the local day ``move``
    days away (the anchor's, to which its UTC day row was attributed).
    """

    grain: int
    lo: int | None
    hi: int | None
    offset: int | None
    window: tuple[int, int] | None = None
    move: int = 0


_EPOCH_SHIFT = 1_000_000
"""Days added before SQL's integer division (which rounds toward zero) and taken off after:
the local day of a time before 1970 is then floored like any other. Year 1 is 719,162 days
before 1970."""


def _ceil_day(ms: int) -> int:
    return -(-ms // DAY_MS) * DAY_MS


def plan_reads(start: int | None, end: int | None, offset: int | None) -> list[Read]:
    """The reads whose signed sum is every charge of ``[start, end)`` by local day (see above).

    ``start``/``end`` must be UTC hours and ``offset`` whole hours; ``offset`` None: no day
    column (then the span may be unbounded).
    """
    for value in (start, end, offset):
        if value is not None and value % BUCKET_MS:
            raise StorageError(f"the rollup reads whole UTC hours, not {value} ms")
    first = None if start is None else _ceil_day(start)
    last = None if end is None else end - end % DAY_MS
    if first is not None and last is not None and first >= last:
        return [Read(GRAIN_HOUR, start, end, offset)]
    reads: list[Read] = []
    if start is not None and first is not None and start < first:
        reads.append(Read(GRAIN_HOUR, start, first, offset))
    if end is not None and last is not None and last < end:
        reads.append(Read(GRAIN_HOUR, last, end, offset))
    shift = 0 if offset is None else offset % DAY_MS  # k': the last k' hours are the next day
    if offset is None or shift == 0:
        reads.append(Read(GRAIN_DAY, first, last, offset))
        return reads
    if first is None or last is None:
        raise StorageError("a report with a day column reads a bounded span")
    if shift <= DAY_MS // 2:  # anchor: the first hour; the last k' hours move to the next day
        anchor, window, move = 0, (DAY_MS - shift, DAY_MS), -1
    else:  # anchor: the last hour; the first 24 - k' hours move to the day before
        anchor, window, move = DAY_MS - BUCKET_MS, (0, DAY_MS - shift), 1
    reads.append(Read(GRAIN_DAY, first, last, offset + anchor))
    reads.append(Read(GRAIN_HOUR, first, last, offset, window=window, move=move))
    return reads


def sums_query(
    reads: list[Read], scope: str | None, scope_group: str | None, dims: list[str], *, timed: bool
) -> tuple[str, list[Any]]:
    """One statement: the reads as ``UNION ALL`` branches under one ``GROUP BY``."""
    params: list[Any] = []
    ctes: list[str] = []
    if scope_group is None:
        scope_sql, scope_params = "r.scope = ?", [scope or "account"]
    else:
        # The scopes of the group, from the day rows (a charge has day rows for every scope):
        # then each read below is one index range per scope instead of a scan.
        found = f"SELECT DISTINCT scope FROM report_rollup WHERE grain = {GRAIN_DAY}"
        if scope_group != "*":
            prefix = scope_group + ":"  # exact (LIKE ignores case on SQLite)
            found += f" AND substr(scope, 1, {len(prefix):d}) = ?"
            params.append(prefix)
        ctes.append(f"rollup_scopes(scope) AS ({found})")
        scope_sql, scope_params = "r.scope IN (SELECT scope FROM rollup_scopes)", []
    windowed = [r for r in reads if r.window is not None]
    if windowed:
        # The UTC day starts of the span and the hour offsets in a day; a windowed read looks
        # its hours up by key (IN), one index probe per hour and scope.
        ctes.append(
            "rollup_days(d) AS (SELECT CAST(? AS BIGINT) UNION ALL "
            f"SELECT d + {DAY_MS} FROM rollup_days WHERE d + {DAY_MS} < ?)"
        )
        params.extend((min(r.lo or 0 for r in windowed), max(r.hi or 0 for r in windowed)))
        ctes.append(
            "rollup_steps(x) AS (SELECT CAST(0 AS BIGINT) UNION ALL "
            f"SELECT x + {BUCKET_MS} FROM rollup_steps WHERE x + {BUCKET_MS} < {DAY_MS})"
        )
    cols = (["scope"] if scope_group is not None else []) + ["unit", *dims]
    sums = ", ".join(f"r.{c} AS {c}" for c in SUM_COLUMNS)
    branches: list[str] = []
    branch_params: list[Any] = []  # the branches follow every CTE in the text
    for read in reads:
        select: list[str] = []
        mine: list[Any] = []
        if timed:
            select.append(f"(r.bucket + ? + {_EPOCH_SHIFT * DAY_MS}) / {DAY_MS} - {_EPOCH_SHIFT} AS day")
            mine.append(read.offset or 0)
        select.extend(f"r.{c} AS {c}" for c in cols)
        where = [f"r.grain = {read.grain}", scope_sql]
        mine.extend(scope_params)
        if read.window is None:
            if read.lo is not None:
                where.append("r.bucket >= ?")
                mine.append(read.lo)
            if read.hi is not None:
                where.append("r.bucket < ?")
                mine.append(read.hi)
            sql = (
                "SELECT " + ", ".join([*select, sums]) + " FROM report_rollup r WHERE " + " AND ".join(where)
            )
            branches.append(sql)
            branch_params.extend(mine)
            continue
        # Moved hours: summed once per (local day, group) into a CTE, then added to their
        # own local day and subtracted from the anchor's.
        where.append(
            "r.bucket IN (SELECT d + x FROM rollup_days, rollup_steps "
            "WHERE d >= ? AND d < ? AND x >= ? AND x < ?)"
        )
        mine.extend((read.lo, read.hi, *read.window))
        name = f"rollup_moved{len(ctes)}"
        keys = (["day"] if timed else []) + cols
        ctes.append(
            f"{name} AS (SELECT {', '.join(select)}, "
            + ", ".join(f"SUM(r.{c}) AS {c}" for c in SUM_COLUMNS)
            + " FROM report_rollup r WHERE "
            + " AND ".join(where)
            + " GROUP BY "
            + ", ".join(keys)
            + ")"
        )
        params.extend(mine)
        shifted = ([f"day + {read.move} AS day"] if timed else []) + cols
        branches.append(f"SELECT {', '.join([*keys, *SUM_COLUMNS])} FROM {name}")
        branches.append(f"SELECT {', '.join([*shifted, *(f'-{c} AS {c}' for c in SUM_COLUMNS)])} FROM {name}")
    params.extend(branch_params)
    group = (["day"] if timed else []) + cols
    outer = ["day" if timed else "NULL", "scope" if scope_group is not None else "NULL", "unit", *dims]
    outer.extend(f"SUM({c})" for c in SUM_COLUMNS)
    sql = ("WITH RECURSIVE " + ", ".join(ctes) + " " if ctes else "") + "SELECT " + ", ".join(outer)
    sql += " FROM (" + " UNION ALL ".join(branches) + ") t"
    sql += " GROUP BY " + ", ".join(group)
    return sql, params
