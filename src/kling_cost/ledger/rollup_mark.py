"""SQLite's deferred report rollup: a settle writes its charge and nothing else; a *fold* adds
every charge above a watermark to ``report_rollup`` later, many at a time, in SQL.

Why: on SQLite what a write transaction costs is mostly the pages it changes (each one is
copied on its first change and written to the WAL at commit: about 14 us a page here,
measured in ``benchmarks/ledger_bench.py``). Adding a charge to its rollup rows in the
settle was one statement and one more page per settle; noting it as PostgreSQL does
(``rollup_pending``, :mod:`.rollup_fold`) costs the same. Here nothing is noted: SQLite has
one writer at a time, so when a fold runs every charge with an id above the watermark
(``report_rollup_meta.folded_upto``) has committed, and a fold of a batch of them moves the
watermark past the batch in the same transaction. Each charge is added exactly once; a crash
or an error rolls the sums and the watermark back together.

A charge says whether it waits for a fold (``charges.rollup_deferred``, migration 15): 1
when its settle left it to one, 0 when its settle added it to the rollup itself, as every
settle did before this migration and as a process still running an older kling-cost does
(its statement leaves the column at its default). A fold skips those, and moves the
watermark past them too, so nothing is counted twice however versions are mixed on one file.

A process of an older version still running after the migration adds its own charges, but
never folds: until it is restarted, its reports miss the charges of newer processes settled
since the last fold (stop the processes of the earlier version before upgrading, as the
README says).

When the rollup catches up is what :mod:`.rollup_fold` says (before every report, and in
the background every ``fold_interval`` seconds once a ledger has settled a charge). A copy
hands the charges still waiting on to the target as ``rollup_pending`` rows, which both
backends fold (:func:`hand_over`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..budgets import UNITS
from .rollup import (
    BUCKET_MS,
    DAY_MS,
    GRAIN_DAY,
    GRAIN_HOUR,
    KEY_COLUMNS,
    STATUSES,
    SUM_COLUMNS,
    rollup_values,
    sums_sql,
)

if TYPE_CHECKING:
    from .backend import Cursor

__all__ = [
    "DEFERRED_MIGRATION",
    "DEFERRED_VERSION",
    "MARK_BATCH",
    "fold_marked",
    "hand_over",
    "marked_pending",
]

DEFERRED_VERSION = 15
"""The schema version from which SQLite's settles leave their charges to a fold."""

MARK_BATCH = 2_000
"""Charges per fold transaction: the write lock is held a few milliseconds at a time."""

_WATERMARK = "COALESCE((SELECT value FROM report_rollup_meta WHERE name = 'folded_upto'), 0)"
"""Every charge with an id at or below it is in the rollup (or was added by its settle)."""


def _watch_deletes(cur: Cursor, dialect: str) -> None:
    """SQLite gives a new row ``MAX(id) + 1``: once the last charges are deleted (by hand: the
    ledger never deletes one), their ids come back, so the watermark must come down with them
    (or the new charges would never be folded) and a deleted charge's ``rollup_pending`` row
    must go (or the new charge with its id would be folded twice). (PostgreSQL never hands an
    id out twice.)"""
    if dialect == "sqlite":
        cur.execute(
            "CREATE TRIGGER charges_deleted AFTER DELETE ON charges BEGIN "
            "DELETE FROM rollup_pending WHERE charge_id = old.id; "
            "UPDATE report_rollup_meta SET value = (SELECT COALESCE(MAX(id), 0) FROM charges) "
            "WHERE name = 'folded_upto' AND value > (SELECT COALESCE(MAX(id), 0) FROM charges); END"
        )


DEFERRED_MIGRATION: list[str | Callable[[Cursor, str], None]] = [
    # Migration 15: SQLite's settles leave their charges to a fold (see ledger/rollup_mark.py).
    "ALTER TABLE charges ADD COLUMN rollup_deferred INTEGER NOT NULL DEFAULT 0",
    "INSERT INTO report_rollup_meta (name, value) "
    "SELECT 'folded_upto', MAX(id) FROM charges HAVING MAX(id) IS NOT NULL",
    _watch_deletes,
]

_PROBE = f"SELECT 1 FROM charges WHERE id > {_WATERMARK} LIMIT 1"
_NEXT = (
    f"SELECT {_WATERMARK}, MAX(id), COUNT(*) FROM "
    f"(SELECT id FROM charges WHERE id > {_WATERMARK} ORDER BY id LIMIT ?)"
)
"""The watermark, and the last id and number of the next batch of charges above it."""
_RANGE = "c.id > ? AND c.id <= ? AND c.rollup_deferred = 1"
_BAD = (
    f"SELECT c.status, c.unit FROM charges c WHERE {_RANGE} AND (c.status NOT IN "
    f"({', '.join(repr(s) for s in STATUSES)}) OR c.unit NOT IN "
    f"({', '.join(repr(u) for u in UNITS)})) LIMIT 1"
)


_HOUR = f"(c.created_at - ((c.created_at % {BUCKET_MS}) + {BUCKET_MS}) % {BUCKET_MS})"
_DAY = f"(p.hour - ((p.hour % {DAY_MS}) + {DAY_MS}) % {DAY_MS})"
_FOLD = f"""
INSERT INTO report_rollup ({", ".join(KEY_COLUMNS)}, {", ".join(SUM_COLUMNS)})
SELECT s.value, g.grain, CASE WHEN g.grain = {GRAIN_HOUR} THEN p.hour ELSE {_DAY} END,
    p.model, p.mode, p.unit, 0, {", ".join(f"SUM(p.{c})" for c in SUM_COLUMNS)}
FROM (
    SELECT c.scopes, {_HOUR} AS hour, COALESCE(c.model, '') AS model, COALESCE(c.mode, '') AS mode,
        c.unit, {sums_sql()}
    FROM charges c WHERE {_RANGE}
    GROUP BY 1, 2, 3, 4, 5
) AS p, json_each(p.scopes) AS s, (SELECT {GRAIN_HOUR} AS grain UNION ALL SELECT {GRAIN_DAY}) AS g
WHERE true
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 2, 1, 3, 4, 5, 6
ON CONFLICT (grain, scope, bucket, model, mode, unit, shard) DO UPDATE SET
    {", ".join(f"{c} = report_rollup.{c} + excluded.{c}" for c in SUM_COLUMNS)}
"""
"""The charges of one batch summed by SQLite (first per scope set, hour, model, mode and unit:
a batch has few; then per rollup row), the sums added in key order."""

_ADVANCE = (
    "INSERT INTO report_rollup_meta (name, value) VALUES ('folded_upto', ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


def marked_pending(cur: Cursor) -> bool:
    """Whether any charge is above the watermark (a read)."""
    cur.execute(_PROBE)
    return cur.fetchone() is not None


def fold_marked(cur: Cursor, batch: int) -> int:
    """Fold the next ``batch`` charges above the watermark in the transaction of ``cur`` and
    move the watermark past them; returns how many charges it passed (deferred or not). A
    charge in a status or unit the rollup does not know raises StorageError (the caller's
    transaction rolls back: nothing is folded, it would be summed wrong)."""
    cur.execute(_NEXT, (batch,))
    low, high, count = cur.fetchone()
    if high is None:
        return 0
    low, high = int(low), int(high)
    cur.execute(_BAD, (low, high))
    bad = cur.fetchone()
    if bad is not None:
        rollup_values(str(bad[0]), 0, 0, 0, None, None, str(bad[1]))  # raises, naming it
    cur.execute(_FOLD, (low, high))
    cur.execute(_ADVANCE, (high,))
    return int(count)


def hand_over(cur: Cursor) -> None:
    """In a copy's target, after every row is in: the charges still waiting for a fold become
    ``rollup_pending`` rows (which every backend folds) and the watermark moves past every
    charge, so the target counts each charge once whatever its backend."""
    cur.execute(
        "INSERT INTO rollup_pending (charge_id) SELECT id FROM charges "
        f"WHERE rollup_deferred = 1 AND id > {_WATERMARK} ON CONFLICT (charge_id) DO NOTHING"
    )
    cur.execute(
        "INSERT INTO report_rollup_meta (name, value) SELECT 'folded_upto', MAX(id) FROM charges "
        "HAVING MAX(id) IS NOT NULL ON CONFLICT (name) DO UPDATE SET value = excluded.value"
    )
