"""A new SQLite ledger file gets 2,048-byte pages (fewer bytes per WAL frame: a pair is 10-12%
faster); a file that exists keeps its own page size, and the checkpointer and the WAL's size
limit follow the file's page size, whichever it is."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger
from kling_cost.ledger.sqlite import SQLiteBackend


def _page_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def _wal_pages(path: Path, page_size: int) -> int:
    """Frames of the current WAL: from its start, those with the header's salts (a restarted
    WAL is written over from the start, its file not shortened)."""
    wal = Path(f"{path}-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return 0
    salts, frames, at = data[16:24], 0, 32
    while at + 24 <= len(data) and data[at + 8 : at + 16] == salts:
        frames, at = frames + 1, at + 24 + page_size
    return frames


def test_a_new_ledger_file_gets_2048_byte_pages(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with open_ledger(f"sqlite:///{path}") as ledger:
        ledger.set_budget("project:a", limit=100)
        ledger.commit(ledger.reserve(5, ["project:a"]), 5)
    assert _page_size(path) == SQLiteBackend.page_size == 2048
    with open_ledger(f"sqlite:///{path}") as ledger:
        assert ledger.usage("project:a").used == Decimal(5)


def test_an_existing_file_keeps_its_page_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as m:
        m.setattr(SQLiteBackend, "page_size", 4096)  # a ledger made before, with SQLite's default
        with open_ledger(f"sqlite:///{path}") as ledger:
            ledger.set_budget("project:a", limit=100)
            ledger.commit(ledger.reserve(5, ["project:a"]), 5)
    assert _page_size(path) == 4096
    with open_ledger(f"sqlite:///{path}") as ledger:
        ledger.commit(ledger.reserve(7, ["project:a"]), 7)
        assert ledger.usage("project:a").used == Decimal(12)
    assert _page_size(path) == 4096
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


@pytest.mark.parametrize("page_size", [2048, 4096])
def test_the_checkpointer_counts_the_files_own_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    """Past ``checkpoint_pages`` frames of the file's own size (not of 4,096 bytes), the
    background checkpointer copies the WAL back and it restarts."""
    monkeypatch.setattr(SQLiteBackend, "page_size", page_size)
    monkeypatch.setattr(SQLiteBackend, "checkpoint_pages", 200)
    monkeypatch.setattr(SQLiteBackend, "checkpoint_poll", 0.01)
    path = tmp_path / "l.db"
    with open_ledger(f"sqlite:///{path}", fold_interval=None) as ledger:
        ledger.set_budget("project:a", limit=10**9)
        most = 0
        for _ in range(300):  # about 8 frames a pair, 3 pairs between two looks of the checkpointer
            ledger.commit(ledger.reserve(1, ["project:a"]), 1)
            most = max(most, _wal_pages(path, page_size))
            time.sleep(0.003)
        assert _page_size(path) == page_size
        assert most > 200  # it did grow past the mark
        # and restarted soon after it, not after twice as many frames (4,096-byte frames assumed)
        assert most < 330, most
