"""Move a whole ledger to another backend: budgets, windows, reservations and charges."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError
from .base import Ledger
from .schema import TABLES

__all__ = ["CopyResult", "copy_ledger"]

BATCH = 500


@dataclass(frozen=True)
class CopyResult:
    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_ledger(source: Ledger, target: Ledger) -> CopyResult:
    """Copy every row of ``source`` into the empty ``target`` in one target transaction.

    Raises :class:`ConfigurationError` if the target already holds data; nothing is written then.
    """
    if source.url == target.url:
        raise ConfigurationError("source and target are the same ledger")
    counts: dict[str, int] = {}
    with source._transaction() as src, target._transaction() as dst:
        for table, _columns, _identity in TABLES:
            dst.execute(f"SELECT COUNT(*) FROM {table}")
            if dst.fetchone()[0]:
                raise ConfigurationError(
                    f"target ledger {target.url} already has data in {table}; copy into an empty ledger"
                )
        for table, columns, identity in TABLES:
            names = ", ".join(columns)
            marks = ", ".join("?" * len(columns))
            src.execute(f"SELECT {names} FROM {table} ORDER BY {columns[0]}")
            rows = src.fetchall()
            for row in rows:
                dst.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row))
            counts[table] = len(rows)
            if identity is not None:  # ids of deleted rows (a budget's) are never handed out again
                high_water = source._id_high_water(src, table, identity)
                target._after_bulk_insert(dst, table, identity, high_water)
    return CopyResult(counts)
