"""The deferred report rollup of PostgreSQL: a settle notes its charge in ``rollup_pending``,
and a *fold* adds the noted charges to ``report_rollup`` later, many at a time.

Why: adding one charge to the rollup rows in the settle itself is an upsert of four rows (an
hour and a day row for ``account`` and for each scope). On PostgreSQL each of them is a row
lock and an update in the write-ahead log, and shared rows queue every committing process
behind each other's commit. Measured on the one-statement commit (:mod:`.schema_fast`), they
were the largest part of it: about 40 % of its time on the server and a quarter of the log
written per reserve+commit pair. Noting the charge instead is one insert of its id (no lock
on any shared row), and a fold of a thousand charges writes each rollup row of the hour once:
one statement in which the server sums them (SQLite, which only folds what a copy from
PostgreSQL brought, sums them here).

When the rollup catches up:

* **before every report** (:meth:`~.rollup_store.RollupStore.catch_up`): a report includes
  every charge settled before it began, as before; a connection that cannot write (a
  read-only role, a hot standby) reads the raw charges instead;
* **in the background**: the first time a ledger notes a charge, it starts a thread that
  folds whatever is pending every :data:`FOLD_INTERVAL` seconds (a one-row probe when
  nothing is), so the table stays small when nobody reads a report. Closing the ledger
  stops it; what is still noted then, the next fold of any process takes.

A fold is one transaction: it deletes the pending rows it takes (``DELETE ... RETURNING``)
and adds their charges, so each charge is added exactly once, and a crash or an error rolls
both back (the rows stay pending for the next fold). Folds of several processes take turns
(an advisory lock); a settle never waits on a fold's locks (a fold holds one of its
process's pooled connections while it runs). The rows a fold adds to are written in
key order.

On SQLite a settle still adds to the rollup rows itself: one writer at a time, so no row is
ever queued on, and an insert costs about what the upsert does. A SQLite ledger copied from
PostgreSQL folds the pending rows it was copied with on its first report.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from datetime import timedelta
from decimal import Decimal
from numbers import Real
from typing import TYPE_CHECKING, Any

from ..budgets import UNITS
from ..errors import ConfigurationError, KlingCostError
from .rollup import (
    BUCKET_MS,
    DAY_MS,
    GRAIN_DAY,
    GRAIN_HOUR,
    KEY_COLUMNS,
    STATUSES,
    SUM_COLUMNS,
    rollup_rows,
    rollup_values,
    sums_sql,
    upsert_rows,
)
from .rollup_mark import MARK_BATCH, fold_marked, marked_pending

if TYPE_CHECKING:
    from .backend import Cursor
    from .ledger import Ledger

__all__ = [
    "FOLD_BATCH",
    "FOLD_INTERVAL",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "PENDING_MIGRATION",
    "Folder",
    "check_fold_interval",
    "fold",
    "pending",
]

_log = logging.getLogger(__name__)

FOLD_BATCH = 20_000
"""Charges per fold transaction (a fold of more takes several: each holds one batch in memory)."""

FOLD_INTERVAL = 2.0
"""Seconds between the background folds of a ledger that notes charges."""

_CHUNK = 500
"""Charges read per statement (``IN`` list), and rollup rows written per upsert."""

PENDING_MIGRATION: list[str] = [
    # Migration 13: the charges not yet added to the report rollup (PostgreSQL's settles note
    # them here; see ledger/rollup_fold.py).
    "CREATE TABLE rollup_pending (charge_id BIGINT PRIMARY KEY)",
]

_TAKE = (
    "DELETE FROM rollup_pending WHERE charge_id IN "
    "(SELECT charge_id FROM rollup_pending LIMIT ?) RETURNING charge_id"
)
_CHARGES = (
    "SELECT status, created_at, estimate_milli, actual_milli, model, mode, unit, scopes "
    "FROM charges WHERE id IN "
)


MIN_INTERVAL, MAX_INTERVAL = 0.01, 86_400.0
"""The shortest and longest ``fold_interval`` (seconds)."""


def check_fold_interval(interval: object) -> float | None:
    """``interval`` (seconds, or a timedelta) as seconds, or None (no background fold); a value
    outside [:data:`MIN_INTERVAL`, :data:`MAX_INTERVAL`] raises ConfigurationError."""
    if interval is None:
        return None
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
    if isinstance(seconds, bool) or not isinstance(seconds, Real | Decimal):
        raise ConfigurationError(
            f"fold_interval must be a number of seconds, a timedelta or None, not {interval!r}"
        )
    seconds = float(seconds)
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ConfigurationError(
            f"fold_interval must be {MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds (or None: only reads "
            f"fold), not {interval!r}"
        )
    return seconds


def pending(ledger: Ledger) -> bool:
    """Whether any charge waits to be folded (a read: takes no lock)."""
    with ledger.transaction(snapshot=True) as cur:
        return _noted_in(cur) or (ledger.rollup.writer.deferred and marked_pending(cur))


_HOUR = f"(c.created_at - mod(mod(c.created_at, {BUCKET_MS}) + {BUCKET_MS}, {BUCKET_MS}))"
_DAY = f"(p.hour - mod(mod(p.hour, {DAY_MS}) + {DAY_MS}, {DAY_MS}))"
_FOLD_PG = f"""
WITH taken AS (
    DELETE FROM rollup_pending WHERE charge_id IN (SELECT charge_id FROM rollup_pending LIMIT ?)
    RETURNING charge_id
), per AS (
    SELECT c.scopes, {_HOUR} AS hour, COALESCE(c.model, '') AS model, COALESCE(c.mode, '') AS mode,
        c.unit, {sums_sql()}
    FROM taken t JOIN charges c ON c.id = t.charge_id
    GROUP BY 1, 2, 3, 4, 5
), added AS (
    INSERT INTO report_rollup ({", ".join(KEY_COLUMNS)}, {", ".join(SUM_COLUMNS)})
    SELECT s.scope, g.grain, CASE WHEN g.grain = {GRAIN_HOUR} THEN p.hour ELSE {_DAY} END,
        p.model, p.mode, p.unit, 0, {", ".join(f"SUM(p.{c})" for c in SUM_COLUMNS)}
    FROM per p CROSS JOIN LATERAL json_array_elements_text(p.scopes::json) AS s(scope)
        CROSS JOIN (VALUES ({GRAIN_HOUR}), ({GRAIN_DAY})) AS g(grain)
    GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 2, 1, 3, 4, 5, 6
    ON CONFLICT (grain, scope, bucket, model, mode, unit, shard) DO UPDATE SET
        {", ".join(f"{c} = report_rollup.{c} + excluded.{c}" for c in SUM_COLUMNS)}
    RETURNING 1
), bad AS (
    SELECT c.status, c.unit FROM taken t JOIN charges c ON c.id = t.charge_id
    WHERE c.status NOT IN ({", ".join(repr(s) for s in STATUSES)})
        OR c.unit NOT IN ({", ".join(repr(u) for u in UNITS)})
    LIMIT 1
)
SELECT (SELECT COUNT(*) FROM taken), (SELECT COUNT(*) FROM added), bad.status, bad.unit
FROM (VALUES (1)) AS one(x) LEFT JOIN bad ON true
"""
"""PostgreSQL's fold of one batch as one statement: the pending rows taken, their charges
summed by the server (first per scope set, hour, model, mode and unit: a batch has few; then
per rollup row), the sums added in key order; the count of charges taken, and the status and
unit of a charge the rollup cannot count, if any (the caller then raises: all rolls back).
No charge crosses the network."""


def fold(ledger: Ledger, *, batch: int = FOLD_BATCH, wait: bool = True, patience: float | None = None) -> int:
    """Add every pending charge to the rollup, ``batch`` charges per transaction (SQLite's
    deferred charges: at most :data:`~.rollup_mark.MARK_BATCH`); returns how many were added
    (SQLite: and passed by its watermark). ``wait=False``: nothing when another fold is under
    way (it takes them). ``patience``: on SQLite, fold only if its write lock comes within
    this many seconds (else StorageError; see :meth:`.Backend.transaction`).
    A charge in a status or unit the rollup does not know raises StorageError (nothing is
    folded: it would be summed wrong)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigurationError(
            f"a fold's batch must be a whole number of charges of at least 1, not {batch!r}"
        )
    total = 0
    if ledger.backend.dialect == "postgresql":
        noted = True
    else:  # SQLite notes none itself: only a copy brings noted charges
        with ledger.transaction(snapshot=True) as cur:
            noted = _noted_in(cur)
    while noted:
        with ledger.transaction(wait=patience) as cur:
            if not ledger.backend.lock_named(cur, "rollup", wait=wait):
                return total
            if ledger.backend.dialect == "postgresql":
                # The planner guesses 100 scopes a charge (there are 1-3): JIT compiling the
                # statement for that would cost more than running it.
                cur.execute("SET LOCAL jit = off")
                cur.execute(_FOLD_PG, (batch,))
                taken, _added, status, unit = cur.fetchone()
                if status is not None:
                    rollup_values(str(status), 0, 0, 0, None, None, str(unit))  # raises, naming it
                taken = int(taken)
            else:
                taken = _fold_rows(cur, batch)
        total += taken
        if taken < batch:
            break
    if ledger.rollup.writer.deferred:  # SQLite's charges above the watermark (.rollup_mark)
        batch = min(batch, MARK_BATCH)
        while True:
            with ledger.transaction(wait=patience) as cur:
                taken = fold_marked(cur, batch)
            total += taken
            if taken < batch:
                break
    return total


def _noted_in(cur: Cursor) -> bool:
    """Whether any charge is noted in ``rollup_pending``."""
    cur.execute("SELECT 1 FROM rollup_pending LIMIT 1")
    return cur.fetchone() is not None


def _fold_rows(cur: Cursor, batch: int) -> int:
    """One batch, summed here (SQLite: only a copy of a PostgreSQL ledger has any)."""
    cur.execute(_TAKE, (batch,))
    ids = [int(row[0]) for row in cur.fetchall()]
    sums: dict[tuple[Any, ...], list[int]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        cur.execute(_CHARGES + "(" + ", ".join("?" * len(chunk)) + ")", chunk)
        for status, created, est, act, model, mode, unit, scopes in cur.fetchall():
            values = rollup_values(status, int(created), int(est), int(act), model, mode, unit)
            for row in rollup_rows([str(s) for s in json.loads(scopes)], values):
                key = row[: len(KEY_COLUMNS)]
                found = sums.get(key)
                if found is None:
                    sums[key] = list(row[len(KEY_COLUMNS) :])
                else:
                    for i, value in enumerate(row[len(KEY_COLUMNS) :]):
                        found[i] += value
    rows = [(*key, *sums[key]) for key in sorted(sums)]  # key order: folds never deadlock
    for start in range(0, len(rows), _CHUNK):
        upsert_rows(cur, rows[start : start + _CHUNK])
    return len(ids)


class Folder:
    """One ledger's background fold (started by the first charge it notes), every
    ``interval`` seconds; None: never (reads still fold). The thread holds the ledger weakly:
    a ledger dropped without ``close()`` is collected with its connections, and the thread
    ends at its next tick."""

    def __init__(self, ledger: Ledger, interval: float | None = FOLD_INTERVAL) -> None:
        self._ledger = weakref.ref(ledger)
        self._url = ledger.url
        self.interval = interval
        self._stop = threading.Event()
        weakref.finalize(ledger, self._stop.set)  # collected: the thread ends at once
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing = False

    def noted(self) -> None:
        """A charge was noted: make sure the background fold runs."""
        if self._thread is not None or self._stop.is_set() or self.interval is None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self.interval,),
                    name=f"kling-cost-rollup {self._url}",
                    daemon=True,
                )
                self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            ledger = self._ledger()
            if ledger is None:
                return  # dropped without close(): nothing left to fold for
            self._fold_quietly(ledger)
            del ledger

    def _fold_quietly(self, ledger: Ledger) -> None:
        """Fold; a failure is logged (a warning the first time after a success) and the
        charges stay noted for the next fold."""
        try:
            if pending(ledger) and not self._stop.is_set():
                fold(ledger, wait=False)  # never queued behind another fold: closing stays prompt
        except Exception as exc:  # a fold is never worth a dead thread
            _log.log(
                logging.DEBUG if self._failing else logging.WARNING,
                "the report rollup of %s cannot fold its noted charges (they stay noted): %s",
                self._url,
                exc,
                exc_info=not isinstance(exc, KlingCostError),
            )
            self._failing = True
        else:
            self._failing = False

    def close(self) -> None:
        """Stop the thread (the ledger is closing; what is still noted, the next fold takes).
        A fold under way is given a moment, never waited for: closing is prompt even when the
        server has gone away."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_CLOSE_WAIT)


_CLOSE_WAIT = 1.0
"""Seconds :meth:`Folder.close` waits for a fold under way (then closing goes on: it rolls back)."""
