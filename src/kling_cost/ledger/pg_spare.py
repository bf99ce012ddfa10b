"""The PostgreSQL backend's spare connection: one pooled connection, with its cursor, kept
out of the pool between the one-statement calls of :mod:`.pg_fast`.

Taking a connection from ``psycopg_pool`` and giving it back costs more of this process's
time than the call itself spends in Python (a condition variable, the pool's queues and
bookkeeping: about a sixth of the instructions of a reserve+commit pair, measured with
``valgrind --tool=callgrind``), and a new cursor per statement another twelfth. The calls
keep one connection instead: the next call, or the next transaction of any thread, takes
it first, so it is never idle while the pool has to open another.

What the pool would have done still happens: a broken connection, or one not idle after
its statement, goes back to the pool (which discards or resets it), and a connection is
kept at most :data:`SPARE_LIFETIME` seconds before it returns (the pool's ``max_lifetime``
and checks then apply). Closing the backend gives it back first.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

__all__ = ["SPARE_LIFETIME", "Spare"]

SPARE_LIFETIME = 60.0
"""Seconds a connection may be kept out of the pool (from when it was taken from it)."""

_KEEP = 2
"""At most this many connections are kept (two threads may finish at once)."""

Kept = tuple[psycopg.Connection[Any], psycopg.Cursor[Any], float]
"""A kept connection, its cursor, and when it must go back to the pool (monotonic)."""


class Spare:
    """The kept connections of one backend (thread-safe). ``enabled=False`` (a pool the
    application shares with other code) keeps none."""

    __slots__ = ("_closed", "_kept", "_lock", "_waiting")

    def __init__(self, *, enabled: bool = True) -> None:
        self._kept: list[Kept] = []
        self._lock = threading.Lock()
        self._closed = not enabled
        self._waiting = 0

    def take(self) -> Kept | None:
        """A kept connection, its cursor and its deadline; None when there is none."""
        with self._lock:
            return self._kept.pop() if self._kept else None

    def take_or_wait(self) -> Kept | None:
        """:meth:`take`, or None and the caller counts as waiting for the pool until it calls
        :meth:`waited`: meanwhile no connection is kept, every one goes back to the pool (so
        none sits here while a thread waits there)."""
        with self._lock:
            if self._kept:
                return self._kept.pop()
            self._waiting += 1
            return None

    def waited(self) -> None:
        """The pool answered a caller of :meth:`take_or_wait` (a connection or an error)."""
        with self._lock:
            self._waiting -= 1

    def keep(self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], until: float) -> bool:
        """Keep ``conn`` for the next call; False (the caller gives it back to the pool) when
        it is broken or not idle, its time is up, a thread waits for the pool, enough are
        kept, or the backend closed."""
        if conn.broken or conn.pgconn.transaction_status != TransactionStatus.IDLE:
            return False
        if time.monotonic() >= until:
            return False
        with self._lock:
            if self._closed or self._waiting or len(self._kept) >= _KEEP:
                return False
            self._kept.append((conn, cur, until))
            return True

    def drain(self) -> list[psycopg.Connection[Any]]:
        """The kept connections, given up (the backend is closing: none is kept again)."""
        with self._lock:
            self._closed = True
            kept, self._kept = self._kept, []
        return [conn for conn, _cur, _until in kept]
