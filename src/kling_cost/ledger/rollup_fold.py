"""The deferred report rollup of PostgreSQL: a settle notes its charge in ``rollup_pending``,
and a *fold* adds the noted charges to ``report_rollup`` later, many at a time.

Why: adding one charge to the rollup rows in the settle itself is an upsert of four rows (an
hour and a day row for ``account`` and for each scope). On PostgreSQL each of them is a row
lock and an update in the write-ahead log, and shared rows queue every committing process
behind each other's commit. Measured on the one-statement commit (:mod:`.schema_fast`), they
were the largest part of it: about 40 % of its time on the server and a quarter of the log
written per reserve+commit pair. Noting the charge instead is one insert into a table
without an index (no lock on any shared row), and a fold of a thousand charges writes each
rollup row of the hour once.

When the rollup catches up:

* **before every read of it** (:meth:`~.rollup_store.RollupStore.sums`): a report includes
  every charge settled before it began, as before;
* **in the background**: the first time a ledger notes a charge, it starts a thread that
  folds whatever is pending every :data:`FOLD_INTERVAL` seconds (a one-row probe when
  nothing is), so the table stays small when nobody reads a report;
* **when that ledger closes**.

A fold is one transaction: it deletes the pending rows it takes (``DELETE ... RETURNING``)
and adds their charges, so each charge is added exactly once, and a crash or an error rolls
both back (the rows stay pending for the next fold). Folds of several processes take turns
(an advisory lock); a settle never waits for one. The rows a fold adds to are written in
key order.

On SQLite a settle still adds to the rollup rows itself: one writer at a time, so no row is
ever queued on, and an insert costs about what the upsert does. A SQLite ledger copied from
PostgreSQL folds the pending rows it was copied with on its first report.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, KlingCostError
from .rollup import KEY_COLUMNS, rollup_rows, rollup_values, upsert_rows

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "FOLD_BATCH",
    "FOLD_INTERVAL",
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


def check_fold_interval(interval: object) -> float | None:
    """``interval`` if it is a positive number of seconds or None; else ConfigurationError."""
    if interval is None:
        return None
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise ConfigurationError(
            f"fold_interval must be a positive number of seconds (or None: only reads fold), not {interval!r}"
        )
    return float(interval) if interval < float("inf") else None


def pending(ledger: Ledger) -> bool:
    """Whether any charge waits to be folded (a read: takes no lock)."""
    with ledger.transaction(snapshot=True) as cur:
        cur.execute("SELECT 1 FROM rollup_pending LIMIT 1")
        return cur.fetchone() is not None


def fold(ledger: Ledger, *, batch: int = FOLD_BATCH) -> int:
    """Add every pending charge to the rollup, ``batch`` charges per transaction; returns how
    many were added."""
    total = 0
    while True:
        with ledger.transaction() as cur:
            ledger.backend.lock_named(cur, "rollup")
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
        total += len(ids)
        if len(ids) < batch:
            return total


class Folder:
    """One ledger's background fold (started by the first charge it notes), every
    ``interval`` seconds; None: never (reads still fold)."""

    def __init__(self, ledger: Ledger, interval: float | None = FOLD_INTERVAL) -> None:
        self.ledger = ledger
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def noted(self) -> None:
        """A charge was noted: make sure the background fold runs."""
        if self._thread is not None or self._stop.is_set() or self.interval is None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"kling-cost-rollup {self.ledger.url}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None  # noted() starts no thread without one
        while not self._stop.wait(self.interval):
            self._fold_quietly()

    def _fold_quietly(self) -> None:
        try:
            if pending(self.ledger):
                fold(self.ledger)
        except KlingCostError as exc:  # the server is away: the next fold takes them
            _log.debug("rollup fold of %s failed: %s", self.ledger.url, exc)
        except Exception:  # a fold is never worth a dead thread or a ledger that cannot close
            _log.warning("rollup fold of %s failed; the charges stay noted", self.ledger.url, exc_info=True)

    def close(self) -> None:
        """Stop the thread, then fold once more if it ever ran (before the backend closes)."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
            self._fold_quietly()
