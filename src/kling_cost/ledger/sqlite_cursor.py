"""The SQLite backend's transaction cursor: sqlite3's errors translated at the boundary (a
unique violation is a lost race, :class:`~.backend.Conflict`), the transaction's ``now`` read
once, when first asked for."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import StorageError
from .backend import Clock, Conflict

__all__ = ["SQLiteCursor", "translated"]


class SQLiteCursor:
    """Translates sqlite3 errors at the boundary (unique violations -> Conflict); ``now`` is
    read from the clock the first time the transaction asks for it."""

    __slots__ = ("_clock", "_cur", "_now")

    def __init__(self, cur: sqlite3.Cursor, clock: Clock) -> None:
        self._cur = cur
        self._clock = clock
        self._now: datetime | None = None

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def now(self) -> datetime:
        if self._now is None:
            self._now = self._clock()
        return self._now

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self._cur.execute(sql, params)
        except sqlite3.Error as exc:
            raise translated(exc) from exc

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()


def translated(exc: sqlite3.Error) -> Exception:
    """The ledger's error for a statement's: a unique violation is a lost race (Conflict)."""
    if isinstance(exc, sqlite3.IntegrityError) and ("UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc)):
        return Conflict(str(exc))
    return StorageError(f"SQLite ledger: {exc}")
