from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kling_cost.errors import StorageError
from kling_cost.ledger import open_ledger
from kling_cost.ledger.backend import Backend
from kling_cost.ledger.schema import SCHEMA_VERSION, TABLES


def test_copy_list_covers_every_table_and_column(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_ledger(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    # sqlite_sequence: SQLite's AUTOINCREMENT counters; a copy carries them (_after_bulk_insert).
    # budget_epoch: SQLite's count of budget changes, kept by triggers (a copy's inserts move it).
    assert tables - {"schema_version", "sqlite_sequence", "budget_epoch"} == {name for name, _, _ in TABLES}
    for name, columns, _ in TABLES:
        actual = {r[1] for r in conn.execute(f"PRAGMA table_info({name})")}
        assert actual == set(columns), name
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_ledger_upgraded_by_a_newer_version_is_refused_not_written(ledger_url: str) -> None:
    """Code that does not know a migration must not write rows in a shape it cannot know
    (e.g. a rollup key changed since): it says to upgrade, and changes nothing."""
    ledger = open_ledger(ledger_url)
    with ledger.transaction() as cur:
        cur.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    ledger.close()
    with pytest.raises(StorageError, match=f"schema {SCHEMA_VERSION + 1} by a newer kling-cost"):
        open_ledger(ledger_url)
    backend = Backend.registry[ledger_url.split(":", 1)[0]](ledger_url)  # no migration: as it is
    try:
        with backend.transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM budgets")
            assert cur.fetchone()[0] == 0  # nothing was written
            cur.execute("DELETE FROM schema_version WHERE version = ?", (SCHEMA_VERSION + 1,))
    finally:
        backend.close()
