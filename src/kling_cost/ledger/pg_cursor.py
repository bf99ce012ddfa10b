"""The PostgreSQL backend's transaction cursor (:class:`PgCursor`: qmark SQL, statements
queued and sent in one pipeline) and its translation of driver errors into the ledger's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..errors import StorageError
from .backend import Clock, Conflict

__all__ = ["CONFLICTS", "PgCursor", "one_line", "qmark_to_pyformat", "translated"]

CONFLICTS = (pg_errors.UniqueViolation, pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def qmark_to_pyformat(sql: str) -> str:
    return sql.replace("?", "%s")


def one_line(exc: BaseException | str, *, hints: bool = True) -> str:
    """A driver error as one line (libpq's messages span several; its hints are the lines
    indented with a tab, dropped with ``hints=False`` where our message says what to do)."""
    lines = str(exc).splitlines()
    if not hints:
        lines = [line for line in lines if not line.startswith("\t")] or lines
    return " ".join(" ".join(lines).split())


class PgCursor:
    """qmark SQL on a psycopg cursor, with errors translated at the boundary; ``now`` is the
    server's time at the transaction's ``BEGIN``, or the injected clock's (read once).

    Fewer round trips: a statement is queued, not sent, until a result is read
    (``fetchone``, ``fetchall``, ``rowcount``) or the transaction commits; then every queued
    statement goes in one pipeline (one round trip), in order, the ``COMMIT`` with the last
    ones. Writes nobody reads (a charge, rollup rows, outbox rows) cost no round trip of their
    own. A queued statement's error surfaces at that flush, translated the same way
    (:class:`Conflict` or :class:`StorageError`), and the transaction rolls back whole; a
    transaction whose body raised never sends what it still had queued.
    """

    __slots__ = ("_clock", "_conn", "_cur", "_now", "_queued")

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        started: datetime | None,
        clock: Clock,
    ) -> None:
        self._conn = conn
        self._cur = cur
        self._now = started
        self._clock = clock
        self._queued: list[tuple[str, tuple[Any, ...]]] = []

    @property
    def rowcount(self) -> int:
        self._flush()
        return self._cur.rowcount

    @property
    def now(self) -> datetime:
        if self._now is None:
            self._now = self._clock()
        return self._now

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        self._queued.append((qmark_to_pyformat(sql), tuple(params)))
        return self

    def fetchone(self) -> Any:
        self._flush()
        with translated():
            return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        self._flush()
        with translated():
            return self._cur.fetchall()

    def _flush(self) -> None:
        if self._queued:
            with translated():
                self._send(self._take())

    def _take(self) -> list[tuple[str, tuple[Any, ...]]]:
        queued, self._queued = self._queued, []
        return queued

    def _send(self, queued: list[tuple[str, tuple[Any, ...]]], *, commit: bool = False) -> None:
        """``queued`` (and ``COMMIT``) in one round trip; the cursor keeps the last result."""
        if len(queued) == 1 and not commit:
            self._cur.execute(*queued[0], prepare=True)
            return
        with self._conn.pipeline():
            for sql, params in queued:
                self._cur.execute(sql, params, prepare=True)
            if commit:
                self._conn.execute("COMMIT", prepare=False)

    def commit(self) -> None:
        """Send what is queued with ``COMMIT``: one round trip (driver errors untranslated)."""
        queued = self._take()
        if queued:
            self._send(queued, commit=True)
        else:
            self._conn.execute("COMMIT", prepare=False)


@contextmanager
def translated() -> Iterator[None]:
    """Driver errors as the ledger's: a lost race is a :class:`Conflict`, the rest StorageError."""
    try:
        yield
    except CONFLICTS as exc:
        raise Conflict(str(exc)) from exc
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL ledger: {one_line(exc)}".strip()) from exc
