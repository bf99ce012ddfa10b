from __future__ import annotations

import sqlite3
from pathlib import Path

from kling_cost.ledger import open_ledger
from kling_cost.ledger.schema import SCHEMA_VERSION, TABLES


def test_copy_list_covers_every_table_and_column(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_ledger(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    # sqlite_sequence: SQLite's AUTOINCREMENT counters; a copy carries them (_after_bulk_insert)
    assert tables - {"schema_version", "sqlite_sequence"} == {name for name, _, _ in TABLES}
    for name, columns, _ in TABLES:
        actual = {r[1] for r in conn.execute(f"PRAGMA table_info({name})")}
        assert actual == set(columns), name
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
