"""Shared budgets for many workers and machines: the PostgreSQL backend (psycopg 3 + a pool).

Same SQL as every backend (its ``?`` placeholders become ``%s`` here, prepared); row locks
(taken in budget-id order) make the conditional updates safe under concurrency, and schema
creation runs under an advisory lock.

Round trips: a statement waits for the server only when its result is read; the writes in
between (and the last ones, with the ``COMMIT``) go in one pipeline (see ``_PgCursor``).

One clock per ledger: unless a clock is injected, every transaction reads the server's time
with its ``BEGIN`` (no extra round trip) and decides lease expiry, sweeps and budget windows
by it, so machines whose clocks disagree still agree on what has expired.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigurationError, LedgerClosed, StorageError
from .backend import Backend, Clock, Conflict, Cursor, Declined
from .schema_fast import DECLINED, STALE
from .urls import pg_conninfo, redact_url

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql as pg_sql
    from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

    from .pg_spare import SPARE_LIFETIME, Spare
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError(
        "the PostgreSQL ledger needs psycopg 3 and psycopg_pool: "
        "pip install 'klingai-cost-controls[postgres]'"
    ) from exc

__all__ = ["PostgresBackend"]

# The pool reports the connections it drops and re-opens as warnings; they are ours to turn
# into errors (StorageError), not lines on a terminal. An application that configures logging
# still receives them (this handler only replaces Python's last-resort stderr output).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

_CONFLICTS = (pg_errors.UniqueViolation, pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_BEGIN = "BEGIN"
_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""A transaction that reads one snapshot of every table for its whole life (copies)."""


def _translate(sql: str) -> str:
    return sql.replace("?", "%s")


def _line(exc: BaseException | str, *, hints: bool = True) -> str:
    """A driver error as one line (libpq's messages span several; its hints are the lines
    indented with a tab, dropped with ``hints=False`` where our message says what to do)."""
    lines = str(exc).splitlines()
    if not hints:
        lines = [line for line in lines if not line.startswith("\t")] or lines
    return " ".join(" ".join(lines).split())


class _PgCursor:
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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _PgCursor:
        self._queued.append((_translate(sql), tuple(params)))
        return self

    def fetchone(self) -> Any:
        self._flush()
        with _translated():
            return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        self._flush()
        with _translated():
            return self._cur.fetchall()

    def _flush(self) -> None:
        if self._queued:
            with _translated():
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
def _translated() -> Iterator[None]:
    """Driver errors as the ledger's: a lost race is a :class:`Conflict`, the rest StorageError."""
    try:
        yield
    except _CONFLICTS as exc:
        raise Conflict(str(exc)) from exc
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL ledger: {_line(exc)}".strip()) from exc


class PostgresBackend(Backend):
    """``postgresql://user@host:5432/db[?schema=name]`` (also ``postgres://``).

    Options: ``pool`` (a ready ``psycopg_pool.ConnectionPool``), ``min_size``/``max_size``
    of the pool, ``connect_timeout`` (seconds). When the server is unreachable every
    operation fails with :class:`StorageError`: the ledger fails closed, nothing is reserved.
    ``create`` is accepted for every backend's sake: a database is never created here, only
    the ledger's schema and tables.
    Connections the server dropped (a restart, ``pg_terminate_backend``) are replaced as soon
    as they are found, so every operation after the server is back succeeds.

    ``url`` (and ``repr()``) show the URL with its password replaced by ``***``. Without an
    injected ``clock``, :attr:`clock` is the server's time and every transaction decides by it.
    """

    schemes = ("postgresql", "postgres")
    dialect = "postgresql"
    id_column = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    lock_reservation = " FOR UPDATE"
    defers_rollup = True

    def __init__(
        self,
        url: str,
        *,
        pool: ConnectionPool | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(redact_url(url), clock=clock, create=create)
        conninfo, self.schema = pg_conninfo(url)
        self.connect_timeout = connect_timeout
        self._closed = False
        self._pid = os.getpid()
        self._server_time = clock is None
        self._local_clock = self.clock
        self._offset = timedelta(0)
        self._measure_at = 0.0
        if self._server_time:
            self.clock = self._server_clock
        self._own_pool = pool is None
        self._spare = Spare(enabled=self._own_pool)
        if pool is None:
            _probe(conninfo, self.url, connect_timeout)
            pool = ConnectionPool(
                conninfo,
                min_size=min_size,
                max_size=max_size,
                open=False,
                kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
                configure=self._configure,
                name=f"kling-cost-{self.schema}",
                # A lost connection is replaced at once; if that fails (the server is down)
                # the pool gives the slot up instead of retrying on a backoff that can outlast
                # the outage, and the next operation opens a connection when it needs one:
                # nothing waits for a retry timer once the server is back.
                reconnect_timeout=0,
            )
            try:
                pool.open(wait=True, timeout=connect_timeout)
            except PoolTimeout as exc:
                pool.close()
                raise StorageError(
                    f"cannot reach the PostgreSQL ledger at {self.url}: no connection within "
                    f"{connect_timeout:g} s; check that the server is running and accepts connections"
                ) from exc
        self._pool = pool
        try:
            self._create_schema()
        except BaseException:
            self.close()  # no pool threads left behind by a ledger that never opened
            raise

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(pg_sql.SQL("SET search_path TO {}").format(pg_sql.Identifier(self.schema)))

    def _create_schema(self) -> None:
        with self.transaction(snapshot=True) as cur:  # almost always there: no write to open
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.schema,))
            if cur.fetchone() is not None:
                return
        with self.transaction() as cur:
            self.lock_schema(cur)
            cur.execute(
                pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                .format(pg_sql.Identifier(self.schema))
                .as_string(None)
            )

    def lock_schema(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"kling_cost:{self.schema}",))

    def lock_named(self, cur: Cursor, name: str, *, wait: bool = True) -> bool:
        cur.execute(
            f"SELECT pg_{'' if wait else 'try_'}advisory_xact_lock(hashtext(?))",
            (f"kling_cost:{self.schema}:{name}",),
        )
        return wait or bool(cur.fetchone()[0])

    def id_high_water(self, cur: Cursor, table: str, column: str) -> int:
        cur.execute(
            f"SELECT GREATEST(COALESCE((SELECT MAX({column}) FROM {table}), 0), COALESCE("
            "pg_sequence_last_value(CAST(pg_get_serial_sequence(?, ?) AS regclass)), 0))",
            (table, column),
        )
        return int(cur.fetchone()[0])

    def after_bulk_insert(self, cur: Cursor, table: str, column: str, high_water: int) -> None:
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence(?, ?), GREATEST(COALESCE((SELECT MAX({column}) "
            f"FROM {table}), 0), CAST(? AS BIGINT)) + 1, false)",
            (table, column, high_water),
        )

    def lock_budgets(self, exclusive: bool = False) -> str:
        # KEY SHARE: the lightest lock (the one a foreign key takes); it never blocks another
        # reservation or a limit change, only FOR UPDATE (a unit switch) and DELETE.
        return " FOR UPDATE" if exclusive else " FOR KEY SHARE"

    def scopes_contain(self, column: str, scope: str) -> tuple[str, str]:
        sql, value = super().scopes_contain(column, scope)
        return sql.replace("instr(", "strpos(", 1), value

    # -- one clock: the server's -----------------------------------------------------------------

    def _server_clock(self) -> datetime:
        """The server's time, outside a transaction: this machine's clock corrected by the
        offset measured at the last ``BEGIN`` (exact to about half a round trip)."""
        return self._local_clock() + self._offset

    def _start(self, conn: psycopg.Connection[Any], begin: str) -> datetime | None:
        """``begin`` on ``conn``; returns the server's time at it (None with an injected clock)."""
        if not self._server_time:
            conn.execute(begin, prepare=False)
            return None
        before = self._local_clock()
        cur = conn.execute(begin + "; SELECT now()", prepare=False)  # one round trip
        after = self._local_clock()
        cur.nextset()
        row = cur.fetchone()
        if row is None:  # pragma: no cover - SELECT now() returns one row
            raise StorageError("PostgreSQL ledger: the server did not return its time")
        started: datetime = row[0].astimezone(UTC)
        self._offset = started - (before + (after - before) / 2)
        return started

    # -- transactions ----------------------------------------------------------------------------

    def _begin(self, begin: str = _BEGIN) -> tuple[psycopg.Connection[Any], datetime | None]:
        """A pooled connection inside ``begin``, and the server's time at it.

        ``BEGIN`` is the first thing sent on a connection taken from the pool, so it doubles
        as the check that the connection works: a connection the server dropped (a restart,
        a terminated backend) fails there, before anything of the transaction was sent; it is
        discarded (the pool opens a replacement) and the next one is tried. The pool holds at
        most ``max_size`` idle connections, so after that many failures every one it hands
        out is new: the bound is only reached when the server is really down.
        """
        self._check_usable()
        last: psycopg.Error | None = None
        for _ in range(self._pool.max_size + 2):
            conn = self._getconn()
            try:
                return conn, self._start(conn, begin)
            except psycopg.OperationalError as exc:
                self._pool.putconn(conn)  # broken: the pool discards it and opens another
                last = exc
            except BaseException as exc:
                with suppress(psycopg.Error):
                    conn.execute("ROLLBACK", prepare=False)
                self._pool.putconn(conn)
                if isinstance(exc, psycopg.Error):
                    raise StorageError(f"PostgreSQL ledger at {self.url}: {_line(exc)}") from exc
                raise
        raise StorageError(
            f"PostgreSQL ledger at {self.url}: no working connection ({_line(last or '', hints=False)}); "
            "nothing was changed; check that the server is running"
        ) from last

    def _getconn(self) -> psycopg.Connection[Any]:
        """The spare connection or a pooled one, or StorageError (unreachable) / LedgerClosed."""
        kept = self._spare.take_or_wait()
        if kept is not None:
            return kept[0]
        try:
            return self._pool.getconn(timeout=self.connect_timeout)
        except PoolTimeout as exc:
            raise StorageError(
                f"PostgreSQL ledger at {self.url} is unreachable (no connection within "
                f"{self.connect_timeout:g} s); nothing was changed; check that the server is running"
            ) from exc
        except PoolClosed as exc:
            raise self._closed_error() from exc
        finally:
            self._spare.waited()

    def _check_usable(self) -> None:
        """LedgerClosed after :meth:`close`; StorageError in a process forked from the one that
        opened the ledger: its pooled connections (and the kept one) are the parent's sockets,
        and two processes talking on one mix their replies up or wait for ever."""
        if self._closed:
            raise self._closed_error()
        if self._pid != os.getpid():
            raise StorageError(
                f"the PostgreSQL ledger at {self.url} was opened before this process was forked "
                "from its parent: its connections belong to the parent. Open the ledger only "
                "after forking (or close it before), or start worker processes with spawn: "
                'multiprocessing.get_context("spawn")'
            )

    def _closed_error(self) -> LedgerClosed:
        return LedgerClosed(
            f"the PostgreSQL ledger at {self.url} is closed; open it again with open_ledger()"
        )

    def transaction(self, *, snapshot: bool = False) -> AbstractContextManager[Cursor]:
        return self._transaction(_SNAPSHOT if snapshot else _BEGIN)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Cursor]:
        conn, started = self._begin(begin)
        try:
            with conn.cursor() as cur:
                pg = _PgCursor(conn, cur, started, self.clock)
                try:
                    yield pg
                except BaseException:
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK", prepare=False)
                    raise
                try:
                    pg.commit()
                except psycopg.Error as exc:
                    with suppress(psycopg.Error):  # a queued statement failed: COMMIT never ran
                        conn.execute("ROLLBACK", prepare=False)
                    if isinstance(exc, _CONFLICTS):
                        raise Conflict(str(exc)) from exc
                    raise StorageError(
                        f"PostgreSQL ledger: commit failed ({_line(exc)}); the transaction is "
                        "atomic: it either happened whole or not at all"
                    ) from exc
        except psycopg.Error as exc:  # raised inside the body, outside a translated execute
            raise StorageError(f"PostgreSQL ledger: {_line(exc)}; nothing was changed") from exc
        finally:
            self._pool.putconn(conn)

    # -- one statement, one round trip (.pg_fast) ---------------------------------------------

    @property
    def server_time(self) -> bool:
        """Whether the ledger decides by the server's clock (no clock was injected)."""
        return self._server_time

    def call(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one statement (``%s`` placeholders) as its own transaction on an autocommit
        connection: one round trip. Returns its rows. A function that declines
        (:data:`~.schema_fast.DECLINED`, :data:`~.schema_fast.STALE`) raises
        :class:`Declined`, a lost race :class:`Conflict`, other driver errors StorageError.

        A connection the server dropped is replaced and the statement sent again on another
        (at most as many times as :meth:`_begin` tries): the callers' statements are safe to
        repeat (a reservation's id is chosen before the first attempt; a settled one declines).
        """
        self._check_usable()
        last: psycopg.Error | None = None
        for _ in range(self._pool.max_size + 2):
            kept = self._spare.take()
            if kept is None:
                conn = self._getconn()
                cur, until = conn.cursor(), time.monotonic() + SPARE_LIFETIME
            else:
                conn, cur, until = kept
            try:
                # the server's time comes back with every call (its last column); the clock's
                # offset is measured from it at most once a second (transactions measure too)
                measure = self._server_time and time.monotonic() >= self._measure_at
                before = self._local_clock() if measure else None
                rows = cur.execute(sql, params, prepare=True).fetchall()
                if before is not None and rows and isinstance(rows[0][-1], datetime):
                    self._offset = rows[0][-1] - (before + (self._local_clock() - before) / 2)
                    self._measure_at = time.monotonic() + 1.0
                return rows
            except psycopg.Error as exc:
                if conn.broken:
                    last = exc
                    continue
                if isinstance(exc, pg_errors.InvalidSqlStatementName):
                    # psycopg sends a DEALLOCATE ALL it owed the connection (after DDL, such as
                    # a migration's) behind the first statement it prepares next, then believes
                    # that statement prepared: make both sides forget them, send it again.
                    last = exc
                    with suppress(psycopg.Error):
                        conn.execute("DEALLOCATE ALL", prepare=False)
                    continue
                state = getattr(exc, "sqlstate", None)
                if state in (DECLINED, STALE):
                    raise Declined(_line(exc), stale=state == STALE) from None
                if isinstance(exc, _CONFLICTS):
                    raise Conflict(str(exc)) from exc
                raise StorageError(f"PostgreSQL ledger: {_line(exc)}; nothing was changed") from exc
            finally:
                if not self._spare.keep(conn, cur, until):
                    self._pool.putconn(conn)
        raise StorageError(
            f"PostgreSQL ledger at {self.url}: no working connection ({_line(last or '', hints=False)}); "
            "check that the server is running"
        ) from last

    def drop_schema(self) -> None:
        """Drop this ledger's schema and everything in it (tests, uninstall)."""
        with self.transaction() as cur:
            cur.execute(
                pg_sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                .format(pg_sql.Identifier(self.schema))
                .as_string(None)
            )

    def close(self) -> None:
        self._closed = True
        if self._pid != os.getpid():
            return  # a forked child: closing the parent's connections would end its sessions
        for conn in self._spare.drain():
            self._pool.putconn(conn)
        if self._own_pool:
            self._pool.close()


def _probe(conninfo: str, shown: str, timeout: float) -> None:
    """Connect once before the pool does: an unreachable server, a missing database or wrong
    credentials become one clear :class:`StorageError` at once, not the pool's retries."""
    try:
        with psycopg.connect(conninfo, connect_timeout=max(1, int(timeout))):
            pass
    except psycopg.Error as exc:
        raise StorageError(
            f"cannot reach the PostgreSQL ledger at {shown} ({_line(exc, hints=False)}); start the "
            "server or fix the host, port, database or credentials in the URL"
        ) from exc


def __getattr__(name: str) -> Any:
    """``PostgresLedger`` of earlier versions (deprecated, see :mod:`.deprecated`)."""
    if name == "PostgresLedger":
        from .deprecated import PostgresLedger

        return PostgresLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
