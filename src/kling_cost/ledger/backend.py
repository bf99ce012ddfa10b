"""What a backend gives the ledger: transactions on its connections, the few SQL fragments
that differ between databases, and its driver's errors translated at the boundary.

Nothing else lives in a backend: every statement of the ledger is written once, with ``?``
placeholders, in the module of the part that runs it, and runs unchanged on each backend.
A backend declares its URL schemes and is found through :attr:`Backend.registry`.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Protocol, TypeVar

from ..errors import StorageError
from ..timestamps import utc_now

__all__ = ["RETRIES", "AfterCommit", "Backend", "Clock", "Conflict", "Cursor", "Declined", "retrying"]

Clock = Callable[[], datetime]
"""A function returning the current time as an aware UTC datetime."""

T = TypeVar("T")

RETRIES = 8
"""Attempts of an operation whose transaction keeps losing races (:class:`Conflict`)."""


class Cursor(Protocol):
    """A cursor inside one transaction (qmark placeholders), as every backend hands it out."""

    @property
    def rowcount(self) -> int: ...

    @property
    def now(self) -> datetime:
        """The time every decision of this transaction uses (lease expiry, sweeps, budget
        windows): read once, from the ledger's clock, or from the database server's when the
        ledger is shared by machines whose clocks may disagree (PostgreSQL)."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Conflict(Exception):
    """A concurrent transaction won (unique key, deadlock, serialization): run the operation again.

    Backends raise it from a cursor (or at commit); :func:`retrying` turns too many of them
    into :class:`StorageError`, so it never reaches a caller of the ledger.
    """


class Declined(Exception):
    """A one-statement operation (PostgreSQL's functions, :mod:`.pg_fast`) left the common case:
    nothing was changed; the ledger takes its general path. ``stale``: the caller's copy of the
    budgets is out of date (read them again and retry)."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


def retrying(operation: Callable[[], T]) -> T:
    """Run ``operation`` (which opens its own transaction) until it does not meet a
    :class:`Conflict`, at most :data:`RETRIES` times."""
    for _ in range(RETRIES - 1):
        try:
            return operation()
        except Conflict:
            continue
    try:
        return operation()
    except Conflict as exc:
        raise StorageError(f"gave up after {RETRIES} conflicting attempts: {exc}") from None


class AfterCommit:
    """A transaction (a backend's) that calls ``after`` once it has committed, and refuses to
    open inside another transaction of the same ledger in the same thread (``open_in``: that
    ledger's per-thread flag). Transactions do not nest: on SQLite the inner ``BEGIN`` fails,
    on PostgreSQL it would take a second connection and wait forever for the row locks the
    outer one holds."""

    __slots__ = ("_after", "_inner", "_open_in")

    def __init__(
        self, inner: AbstractContextManager[Cursor], after: Callable[[], None], open_in: threading.local
    ) -> None:
        self._inner = inner
        self._after = after
        self._open_in = open_in

    def __enter__(self) -> Cursor:
        if getattr(self._open_in, "active", False):
            raise StorageError(
                "a ledger transaction is already open in this thread and transactions do not nest: "
                "use the cursor you were given (a hook must not call the ledger's methods), or "
                "finish the open transaction first"
            )
        cur = self._inner.__enter__()
        self._open_in.active = True
        return cur

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._open_in.active = False
        swallowed = self._inner.__exit__(kind, exc, tb)
        if kind is None:
            self._after()
        return swallowed


class Backend(ABC):
    """Connections, transactions and dialect of one database; see :mod:`.sqlite`, :mod:`.postgres`.

    ``clock``: the time source when injected (tests move it); otherwise this machine's clock,
    or the server's where machines share the database (:attr:`clock` is what the ledger uses).
    ``create=False``: open only a database that already holds a ledger (SQLite: the file must
    exist; PostgreSQL: the schema must hold the ledger's tables).
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    registry: ClassVar[dict[str, type[Backend]]] = {}
    """URL scheme -> backend class, filled by every subclass that declares :attr:`schemes`."""

    dialect: ClassVar[str] = "sqlite"
    """``sqlite`` or ``postgresql``: for migration steps that plain shared SQL cannot express."""
    id_column: ClassVar[str] = "INTEGER PRIMARY KEY"
    """The identity column of the schema's ``{id}``."""
    without_rowid: ClassVar[str] = ""
    """The schema's ``{without_rowid}``: SQLite's clustered-key table option."""
    defers_rollup: ClassVar[bool] = False
    """Whether a settle notes its charge for a later fold instead of adding it to the report
    rollup rows itself (:mod:`.rollup_fold`)."""
    lock_reservation: ClassVar[str] = ""
    """A suffix for a ``SELECT`` of one reservation row that locks it until the transaction
    ends. SQLite needs none: ``BEGIN IMMEDIATE`` already serialises every writer."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            Backend.registry[scheme] = cls

    def __init__(self, url: str, *, clock: Clock | None = None, create: bool = True) -> None:
        self.url = url
        """The URL, as it may be shown (no password)."""
        self.clock: Clock = clock or utc_now

    @abstractmethod
    def transaction(
        self, *, snapshot: bool = False, wait: float | None = None
    ) -> AbstractContextManager[Cursor]:
        """A cursor inside one write transaction: committed on success, rolled back on error.

        Driver errors become :class:`StorageError`; a unique violation, a deadlock or a
        serialization failure becomes :class:`Conflict` so the caller can retry.
        ``snapshot=True``: a read-only transaction that sees one consistent state of every
        table for its whole life, whatever commits meanwhile, and blocks no writer.
        ``wait``: at most this many seconds (never more than the ledger's timeout) for a
        write transaction's lock on the whole ledger (SQLite's; PostgreSQL takes none, and
        starts at once), then StorageError.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections. The backend can not be used afterwards."""

    def lock_budgets(self, exclusive: bool = False) -> str:
        """A suffix for a ``SELECT`` of budget rows that locks them until the transaction ends:
        shared (a reservation holding on them: their unit and existence stay as read) or
        ``exclusive`` (a unit switch, a deletion: waits for those reservations)."""
        return ""

    def scopes_contain(self, column: str, scope: str) -> tuple[str, str]:
        """A condition (one ``?``, and its value) true when the JSON scope list in ``column``
        holds exactly ``scope``. Not LIKE: SQLite's LIKE ignores ASCII case, and scopes are
        exact on every backend. The quotes make it a whole element, never a prefix."""
        return f"instr({column}, ?) > 0", json.dumps(scope)

    def lock_schema(self, cur: Cursor) -> None:  # noqa: B027 - optional
        """Serialise concurrent migrations (SQLite's BEGIN IMMEDIATE already does)."""

    def lock_named(self, cur: Cursor, name: str, *, wait: bool = True) -> bool:
        """Serialise the transactions that take the lock ``name``, until each ends (SQLite's
        BEGIN IMMEDIATE already serialises every writer). ``wait=False``: False at once when
        another transaction holds it."""
        return True

    def id_high_water(self, cur: Cursor, table: str, column: str) -> int:
        """The highest id ``table`` ever handed out, deleted rows included."""
        cur.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}")  # fixed names only
        return int(cur.fetchone()[0])

    def after_bulk_insert(  # noqa: B027 - optional
        self, cur: Cursor, table: str, column: str, high_water: int
    ) -> None:
        """Let identity sequences continue after rows were inserted with explicit ids, above
        ``high_water`` (the source's :meth:`id_high_water`): no id is ever handed out twice."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
