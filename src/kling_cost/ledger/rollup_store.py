"""The report rollup as a store of the ledger (``ledger.rollup``): the ``report_rollup`` table.

Writing: its :attr:`RollupStore.writer` (:class:`~.rollup.RollupHook`) is one of the ledger's
hooks and adds every settled charge to the rollup inside the ledger's own transaction (on
PostgreSQL: notes it for a fold, :mod:`.rollup_fold`; on SQLite: leaves it to a fold of the
charges above a watermark, :mod:`.rollup_mark`).
Reading: :meth:`RollupStore.sums` answers a report's sums in one statement (planned by
:mod:`.rollup_read`), after rolling up, once, the charges of a ledger older than the rollup,
and folding the charges noted since the last fold.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from . import rollup_read
from .rollup import RollupHook, rollup_values, upsert
from .rollup_fold import FOLD_INTERVAL, Folder, fold, pending
from .rollup_mark import DEFERRED_VERSION
from .rollup_read import Segment

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["RollupStore"]

_log = logging.getLogger(__name__)

CATCH_UP_WAIT = 0.05
"""Seconds a report waits for SQLite's write lock to fold the charges settled since the last
fold (they take milliseconds); then it reads the raw charges instead."""


class RollupStore:
    """One ledger's report rollup: its writer hook and its reads."""

    def __init__(self, ledger: Ledger, fold_interval: float | None = FOLD_INTERVAL) -> None:
        self.ledger = ledger
        self._folder = Folder(ledger, fold_interval)
        self.writer = RollupHook(self._folder.noted if ledger.backend.defers_rollup else None)
        """The hook that keeps the rollup in step (installed in ``ledger.hooks`` by the ledger)."""
        self._backfilled = False
        self._reading = threading.local()

    def defer(self, version: int) -> bool:
        """From migration 15 on SQLite, leave every settled charge to a fold (:mod:`.rollup_mark`):
        True then (the settle marks its charges). Called once the schema version is known."""
        deferred = self.ledger.backend.dialect == "sqlite" and version >= DEFERRED_VERSION
        if deferred:
            self.writer.noted = self._folder.noted
        self.writer.deferred = deferred
        return deferred

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Every :meth:`sums` of this thread inside the block reads one snapshot (a report's
        rows and its totals agree whatever commits or folds meanwhile)."""
        with self.ledger.transaction(snapshot=True) as cur:
            self._reading.cur = cur
            try:
                yield
            finally:
                self._reading.cur = None

    def catch_up(self, patience: float | None = None) -> None:
        """Roll up what a read of the rollup would miss: the charges of a ledger older than
        the rollup (once), and those noted for a fold since the last one. ``patience``: see
        :func:`~.rollup_fold.fold`."""
        self.ensure_backfilled()
        if pending(self.ledger):
            fold(self.ledger, patience=patience)

    def caught_up(self) -> bool:
        """:meth:`catch_up`, False when it cannot write (a read-only role or server: reports
        then read the raw charges), or on SQLite when its write lock does not come within
        :data:`CATCH_UP_WAIT` (a long write transaction elsewhere: a read never waits on one)."""
        try:
            self.catch_up(CATCH_UP_WAIT)
        except StorageError as exc:
            _log.info(
                "the report rollup of %s cannot catch up (%s): reading the charges", self.ledger.url, exc
            )
            return False
        return True

    def fold(self) -> int:
        """Add the charges noted for a fold to the rollup now (see :mod:`.rollup_fold`);
        returns how many. Reads do it themselves: this is for tests and tools that read the
        table directly."""
        return fold(self.ledger)

    def close(self) -> None:
        """Stop the background fold (folding once more if it ran); the ledger is closing."""
        self._folder.close()

    def ensure_backfilled(self) -> None:
        """Roll up the charges recorded before the rollup existed (once; a no-op afterwards)."""
        if self._backfilled:
            return
        with self.ledger.transaction(snapshot=True) as cur:  # almost always nothing to do: no lock
            cur.execute("SELECT 1 FROM report_rollup_meta WHERE name = 'backfill_upto'")
            pending = cur.fetchone() is not None
        if not pending:
            self._backfilled = True
            return
        with self.ledger.transaction() as cur:
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
                        upsert(cur, [str(s) for s in json.loads(scopes)], values)
        self._backfilled = True

    def sums(
        self,
        segments: Sequence[Segment] | None,
        *,
        since: int | None,
        until: int | None,
        scope: str | None,
        scope_group: str | None,
        dims: Sequence[str],
        catch_up: bool = True,
    ) -> list[tuple[Any, ...]]:
        """Rollup sums grouped by (local day number | None, scope | None, unit, *dims), then the 9
        sums. The unit is always a group: amounts of different units are never added.

        ``segments`` (constant-offset spans, on UTC hours) make the first column the local day
        number ``(t + offset) // day``; without them there is no time column and ``since`` /
        ``until`` (UTC hours) bound the period. ``scope_group``: ``"*"`` groups by every scope, a
        kind (``project``) by the scopes of that kind; otherwise the one ``scope`` (default
        ``account``: every charge) is read. ``dims``: ``model`` and/or ``mode``.
        ``catch_up=False``: the caller already did (:meth:`caught_up`): no write here.
        """
        for dim in dims:
            if dim not in ("model", "mode"):
                raise StorageError(f"the rollup has no {dim!r} column")
        if segments is None:
            reads = rollup_read.plan_reads(since, until, None)
        else:
            reads = [r for s in segments for r in rollup_read.plan_reads(s.start, s.end, s.offset)]
        if not reads:
            return []
        sql, params = rollup_read.sums_query(
            reads, scope, scope_group, list(dims), timed=segments is not None
        )
        if catch_up:
            self.catch_up()
        cur = getattr(self._reading, "cur", None)
        if cur is not None:
            cur.execute(sql, params)
            rows = cur.fetchall()
        else:
            with self.ledger.transaction(snapshot=True) as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
        s_n, f_n, c_n = 3 + len(dims), 6 + len(dims), 9 + len(dims)  # counts: never negative
        return [row for row in rows if row[s_n] is not None and (row[s_n] or row[f_n] or row[c_n])]
