"""Move a whole ledger to another backend: budgets, windows, reservations, charges, alerts,
the rollup and the cache.

Each table is read a page at a time in the order of its primary key (keyset: ``WHERE key >
last key ORDER BY key LIMIT n``), so a copy holds one page in memory whatever the ledger's
size, and each page is written with one multi-row ``INSERT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError
from .backend import Cursor
from .ledger import Ledger
from .rollup_mark import hand_over
from .schema import KEYS, TABLES

__all__ = ["BATCH", "CopyResult", "copy_ledger"]

BATCH = 500
"""Rows per page: read from the source, then inserted into the target in one statement."""


@dataclass(frozen=True)
class CopyResult:
    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_ledger(source: Ledger, target: Ledger, *, batch: int = BATCH) -> CopyResult:
    """Copy every row of ``source``, as of one moment, into the empty ``target`` in one target
    transaction, ``batch`` rows at a time. The source stays open to writers meanwhile.

    Raises :class:`ConfigurationError` if the target already holds data; nothing is written then.
    """
    if source.url == target.url:
        raise ConfigurationError("source and target are the same ledger")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigurationError(f"batch must be a whole number of rows of at least 1, not {batch!r}")
    counts: dict[str, int] = {}
    # The source is read from one snapshot (its writers go on meanwhile): every table as of
    # one moment, so the copy's counters agree with its reservations and charges.
    with source.transaction(snapshot=True) as src, target.transaction() as dst:
        for table, _columns, _identity in TABLES:
            dst.execute(f"SELECT COUNT(*) FROM {table}")  # fixed table names only
            if dst.fetchone()[0]:
                raise ConfigurationError(
                    f"target ledger {target.url} already has data in {table}; copy into an empty ledger"
                )
        for table, columns, identity in TABLES:
            counts[table] = _copy_table(src, dst, table, columns, KEYS[table], batch)
            if identity is not None:  # ids of deleted rows (a budget's) are never handed out again
                high_water = source.backend.id_high_water(src, table, identity)
                target.backend.after_bulk_insert(dst, table, identity, high_water)
        hand_over(dst)  # SQLite's charges still waiting for a fold: folded by any target
    return CopyResult(counts)


def _copy_table(
    src: Cursor, dst: Cursor, table: str, columns: Sequence[str], key: Sequence[str], batch: int
) -> int:
    """Copy ``table`` page by page in ``key`` order; returns how many rows were copied."""
    names = ", ".join(columns)
    order = ", ".join(key)
    at = [columns.index(k) for k in key]
    first = f"SELECT {names} FROM {table} ORDER BY {order} LIMIT ?"
    after = (
        f"SELECT {names} FROM {table} WHERE ({order}) > ({', '.join('?' * len(key))}) "
        f"ORDER BY {order} LIMIT ?"
    )
    row_marks = "(" + ", ".join("?" * len(columns)) + ")"
    copied = 0
    last: tuple[object, ...] | None = None
    while True:
        src.execute(first if last is None else after, (batch,) if last is None else (*last, batch))
        rows = src.fetchall()
        if not rows:
            return copied
        dst.execute(
            f"INSERT INTO {table} ({names}) VALUES " + ", ".join([row_marks] * len(rows)),
            [value for row in rows for value in row],
        )
        copied += len(rows)
        if len(rows) < batch:
            return copied
        last = tuple(rows[-1][i] for i in at)
