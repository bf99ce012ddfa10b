"""The embedded default backend: a SQLite file in WAL mode, safe for many threads and processes.

A connection per thread (and process), closed when its thread ends (worker pools retire
threads: an async guard's anyio workers, each event loop's), ``BEGIN IMMEDIATE`` transactions (one writer at a
time: the conditional updates need no row locks), a background WAL checkpointer, and
sqlite3's errors translated at the boundary.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..errors import ConfigurationError, LedgerClosed, StorageError
from .backend import Backend, Clock, Cursor
from .sqlite_checkpoint import checkpoint_loop
from .sqlite_cursor import SQLiteCursor, translated
from .sqlite_fork import check_not_inherited, track
from .sqlite_queue import WriterQueue, begin_immediate, is_busy
from .urls import sqlite_options

__all__ = ["SQLiteBackend"]

T = TypeVar("T")


_HERE = "another thread of this process holds a long write transaction, or waits for one of another process"
_ELSEWHERE = "another process holds a long write transaction"


def _no_write_lock(path: str, timeout: float, why: str = _HERE) -> StorageError:
    return StorageError(
        f"SQLite ledger {path}: no write lock within {timeout:g} s ({why}); raise ?timeout= in the ledger URL"
    )


def _forget(backend: weakref.ref[SQLiteBackend], conn: sqlite3.Connection, pid: int) -> None:
    """Close the connection of a thread that ended. One inherited through ``fork`` is never
    closed in the child (closing it there could disturb the parent's locks): it is kept open."""
    if pid != os.getpid():
        _INHERITED.append(conn)
        return
    owner = backend()
    if owner is not None:
        owner.forget(conn)
    with suppress(sqlite3.Error):
        conn.close()


_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited and must not close (see :func:`_forget`)."""


class _ThreadConnection:
    """One thread's connection, kept in the backend's thread-local storage."""

    __slots__ = ("__weakref__", "conn", "pid", "polling")

    def __init__(self, conn: sqlite3.Connection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.polling = False
        """Its busy timeout is 0: :meth:`SQLiteBackend._begin_write` waits for the write lock
        itself (a snapshot sets the timeout back first)."""


class SQLiteBackend(Backend):
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

    URL options: ``?synchronous=full`` (power-loss durability; default ``normal``, which
    loses nothing when a process crashes), ``?timeout=30`` (seconds to wait for a lock),
    ``?checkpoint=background`` (default: a background thread copies the WAL back into the
    database, so no reservation waits for a checkpoint) or ``auto`` (SQLite's own, inline).
    ``create=False`` refuses a file that does not exist (:class:`StorageError`).
    """

    checkpoint_pages = 4000
    """Checkpoint when the WAL has grown past this many pages (8 MiB at a new ledger's 2 KiB
    pages, 16 MiB at 4 KiB; SQLite's default is 1000). Under a steady stream of writers the WAL
    restarts only after a RESTART checkpoint, which holds every writer for one sync of the
    database file (5-10 ms measured here): at 1000 pages that was a tenth of the time of a busy
    writer, at 4000 a quarter of that."""
    checkpoint_poll = 0.05
    checkpoint_wait_ms = 1
    """How long a RESTART checkpoint may wait for readers on the old WAL. It holds the writer
    lock while it waits, so every reservation would wait with it (a report reading for a
    second would stall them all for that second); past this it gives up until the next tick."""
    checkpoint_cap_pages = 262_144
    """Past this many WAL pages (512 MiB at 2 KiB pages, 1 GiB at 4 KiB), readers that kept the
    WAL from restarting are waited for (see :mod:`.sqlite_checkpoint`): a safety valve for the
    disk, far above what a WAL reaches between two reads in normal use."""
    checkpoint_cap_wait_ms = 2_000
    """How long the checkpointer then waits for them at most (the writers wait too)."""

    page_size = 2048
    """The page size of a new ledger file (SQLite's default is 4096; a file that exists keeps
    its own). A commit writes each page it changed to the WAL, and a reserve or commit changes
    four or five small rows' pages: at 2048 bytes a pair took 10-12% less time here, with or
    without a prompt in its metadata, for the same file size and whole-table reads as fast
    (1024 was faster still without metadata, slower with it, and doubled the file)."""

    schemes = ("sqlite",)
    dialect = "sqlite"
    without_rowid = " WITHOUT ROWID"

    def __init__(self, url: str, *, clock: Clock | None = None, create: bool = True) -> None:
        super().__init__(url, clock=clock, create=create)
        self.path, self.synchronous, self.timeout, self.checkpoint = sqlite_options(url)
        if not create and not Path(self.path).is_file():
            raise StorageError(
                f"ledger {self.path} does not exist; check the path, or create it with "
                "`kling-cost ledger migrate` (or by setting a budget: `kling-cost budget set`)"
            )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writers = threading.RLock()
        """Held by this process's write transaction (see :class:`_Transaction`)."""
        self._queue = WriterQueue(self.path)
        """The line the writers of every process wait in (held with ``_writers``)."""
        self._real_path = os.path.realpath(self.path)
        track(self)
        self._connections: list[sqlite3.Connection] = []
        # connections inside a transaction right now: close() leaves them to their own thread,
        # which closes each as its transaction ends (closing a connection another thread is
        # executing on crashes the interpreter)
        self._busy: set[int] = set()
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._checkpointer_pid = 0

    def open_file(self) -> str | None:
        """The real path of the ledger file while this process has a connection to it open."""
        live = self._connections or (self._checkpointer_pid == os.getpid() and not self._closed)
        return self._real_path if live else None

    def _connect(self) -> sqlite3.Connection:
        check_not_inherited(self._real_path, self.path)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute(f"PRAGMA page_size = {self.page_size}")  # a new file's, before WAL
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigurationError(f"{self.path}: WAL mode unavailable (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            # a WAL that grew while readers kept it from restarting shrinks back when it does
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA journal_size_limit = {self.checkpoint_pages * 4 * size}")
            if self.checkpoint == "background":
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"cannot open SQLite ledger {self.path}: {exc}; check the path and that it is a "
                "SQLite database"
            ) from exc
        with self._lock:
            if self._closed:  # closed meanwhile by another thread
                conn.close()
                raise self._closed_error()
            self._connections.append(conn)
        return conn

    def _closed_error(self) -> LedgerClosed:
        return LedgerClosed(f"the SQLite ledger {self.path} is closed; open it again with open_ledger()")

    def _conn(self) -> sqlite3.Connection:
        return self._held().conn

    def _held(self) -> _ThreadConnection:
        if self._closed:
            raise self._closed_error()
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            held = _ThreadConnection(self._connect(), os.getpid())
            # When the thread ends, its thread-local value goes and the connection is closed:
            # threads come and go (worker pools), connections must not pile up.
            weakref.finalize(held, _forget, weakref.ref(self), held.conn, held.pid).atexit = False
            self._local.held = held
            if self.checkpoint == "background" and self._checkpointer_pid != os.getpid():
                self._start_checkpointer()
        return held

    def forget(self, conn: sqlite3.Connection) -> None:
        """Stop tracking ``conn`` (its thread ended; the caller closes it)."""
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)

    def _start_checkpointer(self) -> None:
        with self._lock:
            if self._checkpointer_pid == os.getpid():
                return
            self._checkpointer_pid = os.getpid()
            self._stop = threading.Event()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name=f"kling-cost-checkpoint {self.path}", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        checkpoint_loop(self, self._stop)

    @property
    def connection_count(self) -> int:
        """Connections open (one per living thread that used the ledger)."""
        with self._lock:
            return len(self._connections)

    def transaction(
        self, *, snapshot: bool = False, wait: float | None = None
    ) -> AbstractContextManager[Cursor]:
        check_not_inherited(self._real_path, self.path)  # before any lock a fork may have copied
        # A deferred BEGIN reads one WAL snapshot from its first read on, and blocks no writer.
        if snapshot:
            return _Transaction(self, "BEGIN", self._begin, self._end, None, None)
        limit = self.timeout if wait is None else max(0.0, min(wait, self.timeout))
        return _Transaction(self, "BEGIN IMMEDIATE", self._begin, self._end, self._writers, limit)

    def run_write(self, body: Callable[..., T], *args: Any) -> T:
        """``body(connection, now, *args)`` in one write transaction, committed when it returns and
        rolled back when it raises: what :meth:`transaction` does, with less Python on the way
        (no cursor object, no context manager), for the ledger's lean path (:mod:`.sqlite_fast`).
        ``now`` is read once the write lock is held; sqlite3's errors come out translated."""
        check_not_inherited(self._real_path, self.path)
        writers = self._writers
        deadline = time.monotonic() + self.timeout
        if not writers.acquire(timeout=self.timeout):
            raise _no_write_lock(self.path, self.timeout)
        try:
            conn = self._start("BEGIN IMMEDIATE", deadline)
            try:
                try:
                    result = body(conn, self.clock(), *args)
                except sqlite3.Error as exc:
                    raise translated(exc) from exc
            except BaseException:
                self._end(conn, False)
                raise
            self._end(conn, True)
            return result
        finally:
            self._queue.release()
            writers.release()

    def _begin(self, begin: str, deadline: float | None = None) -> tuple[sqlite3.Connection, SQLiteCursor]:
        """Start a transaction on this thread's connection (the writer lock is already held
        for ``BEGIN IMMEDIATE``); the connection is busy until :meth:`_end`."""
        conn = self._start(begin, deadline)
        try:
            return conn, SQLiteCursor(conn.cursor(), self.clock)
        except BaseException:  # interrupted: the transaction must not stay open
            self._end(conn, False)
            raise

    def _start(self, begin: str, deadline: float | None) -> sqlite3.Connection:
        """:meth:`_begin` without the cursor."""
        held = self._held()
        conn = held.conn
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._busy.add(id(conn))
        try:
            if begin == "BEGIN IMMEDIATE":
                self._begin_write(held, time.monotonic() + self.timeout if deadline is None else deadline)
            else:
                if held.polling:  # a snapshot's first read may meet a recovery: let SQLite wait
                    conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                    held.polling = False
                conn.execute(begin)
        except BaseException as exc:  # an interruption may land after BEGIN: never keep the lock
            with suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._release(conn)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"SQLite ledger {self.path}: cannot start a transaction: {exc}") from exc
            raise
        return conn

    def _begin_write(self, held: _ThreadConnection, deadline: float) -> None:
        """Wait in the writers' line (:mod:`.sqlite_queue`), then ``BEGIN IMMEDIATE`` (asked
        again while another writer holds SQLite's lock), all before ``deadline`` (``timeout``
        seconds after the transaction asked for the lock, its wait for this process's other
        writers included). The caller holds ``_writers``. With SQLite's lock held, the line
        is passed on (the next writer wakes during this transaction) and no statement waits
        on a writer (WAL); :meth:`leave_line` ends the turn."""
        try:
            if not self._queue.acquire(max(0.0, deadline - time.monotonic())):
                raise _no_write_lock(self.path, self.timeout, _ELSEWHERE)
            conn = held.conn
            if not held.polling:
                conn.execute("PRAGMA busy_timeout = 0")
                held.polling = True
            try:
                begin_immediate(conn, deadline)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                raise _no_write_lock(self.path, self.timeout, _ELSEWHERE) from exc
            self._queue.pass_on()  # SQLite's lock keeps the others out now: the next may wake
        except BaseException:
            self._queue.release()
            raise

    @contextmanager
    def writers_held(self, seconds: float) -> Iterator[bool]:
        """Hold up this ledger's writers, of this process and of every process in line, for
        the block (True), or False when that took more than ``seconds`` (the checkpointer's cap:
        no new WAL frames while it waits for readers)."""
        if not self._writers.acquire(timeout=seconds):
            yield False
            return
        try:
            if not self._queue.acquire(seconds):
                yield False
                return
            try:
                yield True
            finally:
                self._queue.release()
        finally:
            self._writers.release()

    def leave_line(self) -> None:
        """A write transaction ended: the next writer in line (any process) may start."""
        self._queue.release()

    def _end(self, conn: sqlite3.Connection, ok: bool) -> None:
        """Commit (``ok``) or roll back the transaction on ``conn``, then release it."""
        try:
            if not ok:
                with suppress(sqlite3.Error):  # a failed transaction may already be gone
                    conn.execute("ROLLBACK")
                return
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise StorageError(f"SQLite ledger {self.path}: commit failed: {exc}") from exc
        finally:
            self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        """The transaction on ``conn`` ended: if the ledger was closed meanwhile, close it now."""
        with self._lock:
            self._busy.discard(id(conn))
            closing = self._closed and conn in self._connections
            if closing:
                self._connections.remove(conn)
                conn.close()
        if closing:  # outside the lock: dropping the holder runs its finalizer, which takes it
            self._local.__dict__.pop("held", None)

    def id_high_water(self, cur: Cursor, table: str, column: str) -> int:
        cur.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        row = cur.fetchone()
        return max(super().id_high_water(cur, table, column), 0 if row is None else int(row[0]))

    def after_bulk_insert(self, cur: Cursor, table: str, column: str, high_water: int) -> None:
        # Only AUTOINCREMENT tables (budgets) keep a counter; the others take MAX(id) + 1,
        # which is enough for rows that are never deleted.
        cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? AND sql LIKE '%AUTOINCREMENT%'",
            (table,),
        )
        if cur.fetchone() is None:
            return
        cur.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
            (table, table),
        )
        cur.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (high_water, table))

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``'ok'`` when the file is sound."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self._stop.set()
        self._queue.close()
        thread = self._checkpointer
        if thread is not None and thread.is_alive() and self._checkpointer_pid == os.getpid():
            thread.join(timeout=10)
        with self._lock:
            self._closed = True
            for conn in list(self._connections):
                if id(conn) not in self._busy:  # a busy one is closed by its thread, at its end
                    conn.close()
                    self._connections.remove(conn)


class _Transaction:
    """One transaction of a :class:`SQLiteBackend` (a plain context manager: one object per
    transaction, nothing else built on the way in and out); ``begin`` and ``end`` are the
    backend's, ``writers`` its writer lock for a ``BEGIN IMMEDIATE`` (None for a snapshot).

    Writers of this process queue on that lock, in order, instead of meeting SQLite's busy
    handler, which sleeps 1-100 ms between tries (a p99 of a second with many threads);
    against writers of other processes, :meth:`SQLiteBackend._begin_write` asks for SQLite's
    write lock again every 50 us to 1 ms. A deferred ``BEGIN`` (a snapshot) takes no lock and
    blocks no writer.
    """

    __slots__ = ("_backend", "_begin", "_conn", "_end", "_sql", "_wait", "_writers")

    def __init__(
        self,
        backend: SQLiteBackend,
        sql: str,
        begin: Callable[[str, float | None], tuple[sqlite3.Connection, SQLiteCursor]],
        end: Callable[[sqlite3.Connection, bool], None],
        writers: threading.RLock | None,
        wait: float | None,
    ) -> None:
        self._backend = backend
        self._wait = wait
        """Seconds a write transaction waits for the write lock (None: a snapshot)."""
        self._sql = sql
        self._begin = begin
        self._end = end
        self._writers = writers
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> Cursor:
        writers = self._writers
        if writers is None:
            self._conn, cur = self._begin(self._sql, None)
            return cur
        backend = self._backend
        wait = backend.timeout if self._wait is None else self._wait
        deadline = time.monotonic() + wait
        if not writers.acquire(timeout=wait):
            raise _no_write_lock(backend.path, wait)
        try:
            self._conn, cur = self._begin(self._sql, deadline)
        except BaseException:
            writers.release()
            raise
        return cur

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                self._end(conn, kind is None)
        finally:
            if self._writers is not None:
                self._backend.leave_line()
                self._writers.release()


def __getattr__(name: str) -> Any:
    """``SQLiteLedger`` of earlier versions (deprecated, see :mod:`.deprecated`)."""
    if name == "SQLiteLedger":
        from .deprecated import SQLiteLedger

        return SQLiteLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
