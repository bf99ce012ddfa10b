"""The SQLite ledger's background WAL checkpointer: copies the WAL back into the database
file off the request path, so no reservation waits for a checkpoint.

Each tick (``checkpoint_poll`` seconds), once the WAL file has grown past ``checkpoint_pages``:

* a PASSIVE checkpoint copies what it can, blocking no one;
* when writers keep the WAL from ever being fully copied (so it can never restart and keeps
  growing), a RESTART finishes the few frames left so that the next writer rewinds it. It
  holds the write lock while it waits for readers of the old WAL, so it waits at most
  ``checkpoint_wait_ms`` (1 ms), then gives up until the next tick: a report reading for a
  second must not stall every reservation for that second. It runs in the writers' line
  (held up to ``_LINE_WAIT`` for its turn), so writers wait for it there and are woken as it
  ends, instead of meeting SQLite's lock and asking again after a sleep; first it waits for
  the transaction of the writer before it, which left the line as it began;
* readers whose snapshots overlap without a gap (an export loop, several dashboards) keep the
  WAL from ever restarting. Past ``checkpoint_cap_pages`` (512 MiB at 2 KiB pages) the checkpointer holds up
  the writers (this process's and every process's in line: no new frames) and RESTARTs until
  the readers of the old WAL are done, for up to ``checkpoint_cap_wait_ms`` (2 s) and never
  more than a quarter of the ledger's ``timeout`` (writers wait, none fails). A read longer
  than that (one long export) is waited out: the next hold comes after twice the hold, then
  four times, up to a minute. The WAL stays bounded by what the writers write meanwhile; the
  connections' ``journal_size_limit`` shrinks its file back once it restarts.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from .sqlite_queue import begin_immediate

if TYPE_CHECKING:
    from .sqlite import SQLiteBackend

__all__ = ["checkpoint_loop"]

_MAX_PAUSE = 60.0
"""The longest pause between holds of the writers while one long read goes on (seconds)."""
_LINE_WAIT = 0.05
"""How long a RESTART waits for its turn in the writers' line (seconds); past it, the next tick."""
_ATTEMPT_MS = 10
"""Each RESTART of the cap waits this long for a reader: a reader that reads in a loop takes
its read lock again within microseconds, so one long wait would never see it free; short ones
see that it moved on to the copied WAL, or to the database file."""


def checkpoint_loop(backend: SQLiteBackend, stop: threading.Event) -> None:
    """Run until ``stop`` is set (the backend closes; it starts this thread per process)."""
    wal = backend.path + "-wal"
    conn = sqlite3.connect(backend.path, timeout=backend.timeout, isolation_level=None)
    forced_after, misses = 0.0, 0
    try:
        conn.execute(f"PRAGMA busy_timeout = {backend.checkpoint_wait_ms}")
        while not stop.wait(backend.checkpoint_poll):
            try:
                frame = conn.execute("PRAGMA page_size").fetchone()[0] + 24  # set once the file is made
                if os.path.getsize(wal) < backend.checkpoint_pages * frame:
                    continue
                _, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                pages = backend.checkpoint_pages
                if log >= backend.checkpoint_cap_pages and time.monotonic() >= forced_after:
                    hold = min(backend.checkpoint_cap_wait_ms / 1000, backend.timeout / 4)
                    if _wait_for_readers(conn, backend, hold):
                        misses = 0
                    else:  # a read longer than the hold: wait it out before holding them again
                        misses += 1
                        forced_after = time.monotonic() + min(_MAX_PAUSE, hold * 2**misses)
                elif log >= pages and log - done < pages // 4:
                    # in the writers' line: they wait for it there, woken as it ends, instead of
                    # meeting SQLite's lock and asking again after a sleep
                    with backend.writers_held(_LINE_WAIT) as held:
                        if held and _writer_done(conn, time.monotonic() + _LINE_WAIT):
                            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            except (OSError, sqlite3.Error):
                continue  # no WAL yet, or busy: try again at the next tick
        with suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


def _writer_done(conn: sqlite3.Connection, deadline: float) -> bool:
    """(The writers' line held.) Wait for the transaction of the one writer that may have left
    the line before this turn (a writer leaves it as its transaction begins) to end: a RESTART
    that met it would wait 1 ms and give up, and behind long transactions the WAL would never
    restart. False if it has not ended by ``deadline``."""
    try:
        begin_immediate(conn, deadline)
    except sqlite3.OperationalError:
        return False
    conn.execute("ROLLBACK")
    return True


def _wait_for_readers(conn: sqlite3.Connection, backend: SQLiteBackend, wait: float) -> bool:
    """RESTARTs, the writers held up meanwhile (no new frames), until one restarts the WAL or
    ``wait`` seconds have passed: each waits for the oldest reader still on the old WAL, and a
    reader that starts once it is all copied reads the database file. True if it restarted."""
    deadline = time.monotonic() + wait
    busy = 1
    with backend.writers_held(wait) as held:
        try:
            conn.execute(f"PRAGMA busy_timeout = {_ATTEMPT_MS}")
            ready = held and _writer_done(conn, deadline)
            while ready and busy and time.monotonic() < deadline:
                busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        finally:
            conn.execute(f"PRAGMA busy_timeout = {backend.checkpoint_wait_ms}")
    return not busy
