"""Migration steps that plain SQL shared by both dialects cannot express.

A step is called with the migration's cursor and the dialect (``sqlite`` or ``postgresql``)
inside the migration's transaction.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import StorageError

if TYPE_CHECKING:
    from .backend import Cursor

__all__ = ["BUDGET_EPOCH", "count_budget_changes", "never_reuse_budget_ids"]

_ID = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s+AUTOINCREMENT)", re.IGNORECASE)
_REFERENCES = re.compile(r"\bREFERENCES\s+\"?budgets\"?\s*\(", re.IGNORECASE)


def _renamed(sql: str, table: str, new: str) -> str:
    head = re.compile(rf"^\s*CREATE\s+TABLE\s+\"?{table}\"?", re.IGNORECASE)
    out, found = head.subn(f"CREATE TABLE {new}", sql, count=1)
    if not found:
        raise StorageError(f"cannot upgrade the ledger: unexpected definition of table {table}")
    return out


def never_reuse_budget_ids(cur: Cursor, dialect: str) -> None:
    """Budget ids are never handed out again, so the holds, alerts and charges of a deleted
    budget can never reach another one.

    PostgreSQL identities never go back. SQLite's ``INTEGER PRIMARY KEY`` takes ``MAX(id) + 1``,
    so deleting the newest budget gave its id to the next one; ``AUTOINCREMENT`` needs the table
    rebuilt (with its child ``budget_windows``, whatever columns both have by now), and its
    counter starts above every budget id still named anywhere: alerts, and the windows of
    reservations that may still settle (held, or expired and perhaps committed with force; a
    released one is reserved again with fresh windows).
    """
    if dialect != "sqlite":
        return
    cur.execute(
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE tbl_name IN ('budgets', 'budget_windows') AND sql IS NOT NULL"
    )
    rows = [(str(kind), str(name), str(sql)) for kind, name, sql in cur.fetchall()]
    tables = {name: sql for kind, name, sql in rows if kind == "table"}
    if "AUTOINCREMENT" in tables["budgets"].upper():
        return  # done before
    others = [sql for kind, _name, sql in rows if kind != "table"]  # indexes, triggers
    budgets, found = _ID.subn("id INTEGER PRIMARY KEY AUTOINCREMENT", tables["budgets"], count=1)
    if not found:
        raise StorageError("cannot upgrade the ledger: unexpected id column of table budgets")
    windows, found = _REFERENCES.subn("REFERENCES budgets_v7(", tables["budget_windows"])
    if not found:
        raise StorageError("cannot upgrade the ledger: budget_windows does not reference budgets")
    # The children move first: dropping the old budgets table must cascade into nothing.
    cur.execute(_renamed(budgets, "budgets", "budgets_v7"))
    cur.execute("INSERT INTO budgets_v7 SELECT * FROM budgets")
    cur.execute(_renamed(windows, "budget_windows", "budget_windows_v7"))
    cur.execute("INSERT INTO budget_windows_v7 SELECT * FROM budget_windows")
    cur.execute("DROP TABLE budget_windows")
    cur.execute("DROP TABLE budgets")
    cur.execute("ALTER TABLE budgets_v7 RENAME TO budgets")  # also renames the reference
    cur.execute("ALTER TABLE budget_windows_v7 RENAME TO budget_windows")
    for sql in others:
        cur.execute(sql)
    cur.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'budgets', 0 "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'budgets')"
    )
    cur.execute(
        "UPDATE sqlite_sequence SET seq = MAX(seq, "
        "(SELECT COALESCE(MAX(id), 0) FROM budgets), "
        "(SELECT COALESCE(MAX(budget_id), 0) FROM alerts), "
        "(SELECT COALESCE(MAX(CAST(json_extract(w.value, '$[0]') AS INTEGER)), 0) "
        "FROM reservations r, json_each(r.windows) w WHERE r.status IN ('reserved', 'expired'))) "
        "WHERE name = 'budgets'"
    )


BUDGET_EPOCH = "SELECT epoch FROM budget_epoch"
"""How many times the budgets table has changed (SQLite, from migration 14)."""


def count_budget_changes(cur: Cursor, dialect: str) -> None:
    """SQLite: a counter of every change to the budgets table, kept by triggers, so a process
    may reuse the budgets it read until the counter moves (:mod:`.sqlite_fast` checks it in
    the statement that inserts a reservation). Triggers fire for every writer of the file:
    processes of earlier versions, the ``sqlite3`` shell, a copy. A migration that rebuilds
    the budgets table must keep them (as :func:`never_reuse_budget_ids` keeps its triggers).

    PostgreSQL's one-statement functions check each budget's row version instead."""
    if dialect != "sqlite":
        return
    cur.execute("CREATE TABLE budget_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL)")
    cur.execute("INSERT INTO budget_epoch (id, epoch) VALUES (1, 0)")
    for event in ("INSERT", "UPDATE", "DELETE"):
        cur.execute(
            f"CREATE TRIGGER budgets_epoch_{event.lower()} AFTER {event} ON budgets "
            "BEGIN UPDATE budget_epoch SET epoch = epoch + 1 WHERE id = 1; END"
        )
