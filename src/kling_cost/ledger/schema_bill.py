"""Migration 10: the bill's tables (kling_cost.bill): reconciliation runs and their differences,
and a small key-value table for the bill's state (the last resource-pack snapshot, budgets kept
equal to what the packs hold, when ``/account/costs`` was last asked).

Kept in the ledger so every process and machine sharing it sees the same runs and state.
"""

from __future__ import annotations

__all__ = ["BILL_KEYS", "BILL_MIGRATION", "BILL_TABLES"]

BILL_MIGRATION: list[str] = [
    """CREATE TABLE bill_runs (
        id {id},
        kind TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        since_at BIGINT NOT NULL,
        until_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        fixed INTEGER NOT NULL DEFAULT 0,
        summary TEXT NOT NULL
    )""",
    "CREATE INDEX bill_runs_latest ON bill_runs (kind, started_at)",
    """CREATE TABLE bill_differences (
        run_id BIGINT NOT NULL REFERENCES bill_runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        category TEXT NOT NULL,
        task_id TEXT,
        unit TEXT,
        pack_type TEXT,
        ledger_milli BIGINT,
        kling_milli BIGINT,
        day TEXT,
        api_key_name TEXT,
        model TEXT,
        details TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    )""",
    """CREATE TABLE bill_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )""",
]

BILL_TABLES: list[tuple[str, tuple[str, ...], str | None]] = [
    (
        "bill_runs",
        ("id", "kind", "started_at", "finished_at", "since_at", "until_at", "status", "fixed", "summary"),
        "id",
    ),
    (
        "bill_differences",
        (
            "run_id",
            "seq",
            "category",
            "task_id",
            "unit",
            "pack_type",
            "ledger_milli",
            "kling_milli",
            "day",
            "api_key_name",
            "model",
            "details",
        ),
        None,
    ),
    ("bill_meta", ("name", "value", "updated_at"), None),
]

BILL_KEYS: dict[str, tuple[str, ...]] = {
    "bill_runs": ("id",),
    "bill_differences": ("run_id", "seq"),
    "bill_meta": ("name",),
}
