"""Numbered schema migrations, shared by every backend (``{id}`` is the dialect's id column),
and the list of data tables (what a copy moves, and by which key it pages through them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StorageError
from ..timestamps import to_ms
from .rollup_fold import PENDING_MIGRATION
from .rollup_mark import DEFERRED_MIGRATION, DEFERRED_VERSION
from .schema_bill import BILL_KEYS, BILL_MIGRATION, BILL_TABLES
from .schema_fast import SHARD_MIGRATION, install_fast_path
from .schema_proxy import PROXY_KEYS, PROXY_MIGRATION, PROXY_TABLES
from .schema_steps import count_budget_changes, never_reuse_budget_ids

if TYPE_CHECKING:
    from .backend import Backend, Cursor

__all__ = ["KEYS", "MIGRATIONS", "SCHEMA_VERSION", "TABLES", "Step", "migrate"]

Step = Callable[["Cursor", str], None]
"""A migration step SQL alone cannot express: called with the cursor and the dialect."""

# {id}: the dialect's identity column; {without_rowid}: SQLite's clustered-key table option.
MIGRATIONS: list[tuple[int, list[str | Step]]] = [
    (
        1,
        [
            """CREATE TABLE budgets (
                id {id},
                scope TEXT NOT NULL,
                period TEXT NOT NULL,
                tz TEXT NOT NULL,
                limit_milli BIGINT NOT NULL,
                max_per_request_milli BIGINT,
                thresholds TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                UNIQUE (scope, period)
            )""",
            """CREATE TABLE budget_windows (
                budget_id BIGINT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
                window_key TEXT NOT NULL,
                used_milli BIGINT NOT NULL DEFAULT 0,
                reserved_milli BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (budget_id, window_key)
            )""",
            """CREATE TABLE reservations (
                id TEXT PRIMARY KEY,
                idempotency_key TEXT,
                amount_milli BIGINT NOT NULL,
                actual_milli BIGINT,
                status TEXT NOT NULL,
                scopes TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                settled_at BIGINT,
                task_id TEXT,
                windows TEXT NOT NULL,
                metadata TEXT NOT NULL
            ){without_rowid}""",
            "CREATE UNIQUE INDEX reservations_key ON reservations (idempotency_key) "
            "WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX reservations_open ON reservations (expires_at) WHERE status = 'reserved'",
            "CREATE INDEX reservations_task ON reservations (task_id) WHERE task_id IS NOT NULL",
            """CREATE TABLE charges (
                id {id},
                reservation_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                settled_at BIGINT NOT NULL,
                estimate_milli BIGINT NOT NULL,
                actual_milli BIGINT NOT NULL,
                scopes TEXT NOT NULL,
                task_id TEXT,
                kind TEXT,
                model TEXT,
                mode TEXT,
                duration INTEGER,
                audio INTEGER NOT NULL DEFAULT 0,
                prompt_hash TEXT,
                prompt_preview TEXT,
                metadata TEXT NOT NULL
            )""",
            "CREATE INDEX charges_created ON charges (created_at)",
        ],
    ),
]

MIGRATIONS.append(
    (
        2,
        [
            # The alert outbox: one row per (budget, window, threshold), written in the same
            # transaction as the change that crossed it; delivered later, at least once.
            """CREATE TABLE alerts (
                id {id},
                budget_id BIGINT NOT NULL,
                scope TEXT NOT NULL,
                period TEXT NOT NULL,
                window_key TEXT NOT NULL,
                kind TEXT NOT NULL,
                threshold TEXT NOT NULL,
                used_milli BIGINT NOT NULL,
                reserved_milli BIGINT NOT NULL,
                limit_milli BIGINT NOT NULL,
                message TEXT NOT NULL,
                details TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                next_attempt_at BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                delivered_at BIGINT,
                cleared_at BIGINT,
                resolved_status TEXT,
                resolved_at BIGINT,
                sent_to TEXT NOT NULL DEFAULT '[]',
                claim TEXT,
                UNIQUE (budget_id, window_key, threshold)
            )""",
            "CREATE INDEX alerts_due ON alerts (next_attempt_at) WHERE status = 'pending'",
            # resolved_at: when the "resolved" message was accepted; sent_to: the sinks that
            # accepted each phase ("alert:<sink>", "resolved:<sink>"), so a retry only goes to
            # the ones that failed; claim: the token of the deliverer sending it right now.
            "CREATE INDEX alerts_resolve_due ON alerts (next_attempt_at) WHERE resolved_status = 'pending'",
            "CREATE INDEX alerts_open ON alerts (budget_id, window_key) WHERE cleared_at IS NULL",
        ],
    )
)

MIGRATIONS.append(
    (
        3,
        [
            # The report rollup (see ledger/rollup.py): sums per (scope, UTC hour, model, mode)
            # and per status (s_ succeeded, f_ failed, c_ cache hit: count, estimates, actuals).
            """CREATE TABLE report_rollup (
                scope TEXT NOT NULL,
                bucket BIGINT NOT NULL,
                model TEXT NOT NULL,
                mode TEXT NOT NULL,
                s_n BIGINT NOT NULL DEFAULT 0,
                s_est BIGINT NOT NULL DEFAULT 0,
                s_act BIGINT NOT NULL DEFAULT 0,
                f_n BIGINT NOT NULL DEFAULT 0,
                f_est BIGINT NOT NULL DEFAULT 0,
                f_act BIGINT NOT NULL DEFAULT 0,
                c_n BIGINT NOT NULL DEFAULT 0,
                c_est BIGINT NOT NULL DEFAULT 0,
                c_act BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (scope, bucket, model, mode)
            ){without_rowid}""",
            "CREATE TABLE report_rollup_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            # Charges recorded before this migration are rolled up on the first report.
            "INSERT INTO report_rollup_meta (name, value) "
            "SELECT 'backfill_upto', MAX(id) FROM charges HAVING MAX(id) IS NOT NULL",
        ],
    )
)
MIGRATIONS.append(
    (
        4,
        [
            # The dedup cache: a request fingerprint in flight (claimed under a lease) or
            # succeeded (its task reused for free until expires_at).
            """CREATE TABLE request_cache (
                fingerprint TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                reservation_id TEXT,
                task_id TEXT,
                result TEXT,
                estimate_milli BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )""",
        ],
    )
)
_SUMS = "s_n, s_est, s_act, f_n, f_est, f_act, c_n, c_est, c_act"
MIGRATIONS.append(
    (
        5,
        [
            # The rollup gains a grain (see ledger/rollup.py): 0 = the UTC hour rows of
            # migration 3, 1 = rows per UTC day, so long reports read 24 times fewer rows. The
            # grain leads the key: a read of one grain (all scopes too) is one index range.
            """CREATE TABLE report_rollup_v5 (
                scope TEXT NOT NULL,
                grain SMALLINT NOT NULL,
                bucket BIGINT NOT NULL,
                model TEXT NOT NULL,
                mode TEXT NOT NULL,
                s_n BIGINT NOT NULL DEFAULT 0,
                s_est BIGINT NOT NULL DEFAULT 0,
                s_act BIGINT NOT NULL DEFAULT 0,
                f_n BIGINT NOT NULL DEFAULT 0,
                f_est BIGINT NOT NULL DEFAULT 0,
                f_act BIGINT NOT NULL DEFAULT 0,
                c_n BIGINT NOT NULL DEFAULT 0,
                c_est BIGINT NOT NULL DEFAULT 0,
                c_act BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (grain, scope, bucket, model, mode)
            ){without_rowid}""",
            f"INSERT INTO report_rollup_v5 (scope, grain, bucket, model, mode, {_SUMS}) "
            f"SELECT scope, 0, bucket, model, mode, {_SUMS} FROM report_rollup",
            # Day rows from the hour rows (integer division: buckets are positive ms).
            f"INSERT INTO report_rollup_v5 (scope, grain, bucket, model, mode, {_SUMS}) "
            "SELECT scope, 1, (bucket / 86400000) * 86400000, model, mode, "
            + ", ".join(f"SUM({c})" for c in _SUMS.split(", "))
            + " FROM report_rollup GROUP BY scope, (bucket / 86400000) * 86400000, model, mode",
            "DROP TABLE report_rollup",
            "ALTER TABLE report_rollup_v5 RENAME TO report_rollup",
        ],
    )
)
MIGRATIONS.append(
    (
        6,
        [
            # One unit per budget (``units``: Kling's resource-pack units, ``credits``: the
            # app's); every reservation and charge records the unit and the catalog (name and
            # price date) that priced it, so settling never depends on a caller's default.
            "ALTER TABLE budgets ADD COLUMN unit TEXT NOT NULL DEFAULT 'units'",
            "ALTER TABLE reservations ADD COLUMN unit TEXT NOT NULL DEFAULT 'units'",
            "ALTER TABLE reservations ADD COLUMN catalog TEXT",
            "ALTER TABLE reservations ADD COLUMN catalog_date TEXT",
            "ALTER TABLE charges ADD COLUMN unit TEXT NOT NULL DEFAULT 'units'",
            "ALTER TABLE charges ADD COLUMN catalog TEXT",
            "ALTER TABLE charges ADD COLUMN catalog_date TEXT",
        ],
    )
)
_NON_UNITS = "EXISTS (SELECT 1 FROM charges WHERE unit <> 'units')"
MIGRATIONS.append(
    (
        8,
        [
            # The rollup gains the unit (see ledger/rollup.py): amounts in units and credits
            # are summed apart, never together. Last in the key, so every read stays one
            # primary-key range per (grain, scope) and bucket, as before.
            """CREATE TABLE report_rollup_v8 (
                scope TEXT NOT NULL,
                grain SMALLINT NOT NULL,
                bucket BIGINT NOT NULL,
                model TEXT NOT NULL,
                mode TEXT NOT NULL,
                unit TEXT NOT NULL DEFAULT 'units',
                s_n BIGINT NOT NULL DEFAULT 0,
                s_est BIGINT NOT NULL DEFAULT 0,
                s_act BIGINT NOT NULL DEFAULT 0,
                f_n BIGINT NOT NULL DEFAULT 0,
                f_est BIGINT NOT NULL DEFAULT 0,
                f_act BIGINT NOT NULL DEFAULT 0,
                c_n BIGINT NOT NULL DEFAULT 0,
                c_est BIGINT NOT NULL DEFAULT 0,
                c_act BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (grain, scope, bucket, model, mode, unit)
            ){without_rowid}""",
            # Charges settled before migration 6 are all in units: so are their rows. A ledger
            # that already holds charges in another unit (schema 6 or 7) cannot split its rows
            # by unit: they are dropped and the charges rolled up again on the first report.
            f"INSERT INTO report_rollup_v8 (scope, grain, bucket, model, mode, unit, {_SUMS}) "
            f"SELECT scope, grain, bucket, model, mode, 'units', {_SUMS} FROM report_rollup "
            f"WHERE NOT {_NON_UNITS}",
            f"DELETE FROM report_rollup_meta WHERE name = 'backfill_upto' AND {_NON_UNITS}",
            "INSERT INTO report_rollup_meta (name, value) SELECT 'backfill_upto', MAX(id) FROM charges "
            f"HAVING MAX(id) IS NOT NULL AND {_NON_UNITS}",
            "DROP TABLE report_rollup",
            "ALTER TABLE report_rollup_v8 RENAME TO report_rollup",
        ],
    )
)
MIGRATIONS.append(
    (
        7,
        [
            # A deleted budget's id is never given to another budget (see schema_steps.py).
            never_reuse_budget_ids,
            # How far the charge took a budget window past its limit (the largest over its
            # windows; 0 for every charge before this migration). Overage charges are rare:
            # a partial index finds them for reports without reading the others.
            "ALTER TABLE charges ADD COLUMN overage_milli BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX charges_overage ON charges (created_at) WHERE overage_milli > 0",
        ],
    )
)
MIGRATIONS.append((9, list(PROXY_MIGRATION)))
MIGRATIONS.append((10, list(BILL_MIGRATION)))
MIGRATIONS.append((11, [install_fast_path]))
MIGRATIONS.append((12, [*SHARD_MIGRATION, install_fast_path]))
MIGRATIONS.append((13, [*PENDING_MIGRATION, install_fast_path]))
MIGRATIONS.append((14, [count_budget_changes]))
MIGRATIONS.append((DEFERRED_VERSION, list(DEFERRED_MIGRATION)))
MIGRATIONS.sort(key=lambda m: m[0])

SCHEMA_VERSION = MIGRATIONS[-1][0]

TABLES: list[tuple[str, tuple[str, ...], str | None]] = [
    (
        "budgets",
        (
            "id",
            "scope",
            "period",
            "tz",
            "limit_milli",
            "max_per_request_milli",
            "thresholds",
            "created_at",
            "updated_at",
            "unit",
        ),
        "id",
    ),
    ("budget_windows", ("budget_id", "window_key", "used_milli", "reserved_milli"), None),
    (
        "reservations",
        (
            "id",
            "idempotency_key",
            "amount_milli",
            "actual_milli",
            "status",
            "scopes",
            "created_at",
            "expires_at",
            "settled_at",
            "task_id",
            "windows",
            "metadata",
            "unit",
            "catalog",
            "catalog_date",
        ),
        None,
    ),
    (
        "charges",
        (
            "id",
            "reservation_id",
            "idempotency_key",
            "status",
            "created_at",
            "settled_at",
            "estimate_milli",
            "actual_milli",
            "scopes",
            "task_id",
            "kind",
            "model",
            "mode",
            "duration",
            "audio",
            "prompt_hash",
            "prompt_preview",
            "metadata",
            "unit",
            "catalog",
            "catalog_date",
            "overage_milli",
            "rollup_deferred",
        ),
        "id",
    ),
]
TABLES.append(
    (
        "alerts",
        (
            "id",
            "budget_id",
            "scope",
            "period",
            "window_key",
            "kind",
            "threshold",
            "used_milli",
            "reserved_milli",
            "limit_milli",
            "message",
            "details",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "cleared_at",
            "resolved_status",
            "resolved_at",
            "sent_to",
            "claim",
        ),
        "id",
    )
)
TABLES.append(
    (
        "report_rollup",
        (
            "scope",
            "grain",
            "bucket",
            "model",
            "mode",
            "unit",
            "shard",
            "s_n",
            "s_est",
            "s_act",
            "f_n",
            "f_est",
            "f_act",
            "c_n",
            "c_est",
            "c_act",
        ),
        None,
    )
)
TABLES.append(
    (
        "request_cache",
        (
            "fingerprint",
            "status",
            "endpoint",
            "reservation_id",
            "task_id",
            "result",
            "estimate_milli",
            "created_at",
            "updated_at",
            "expires_at",
        ),
        None,
    )
)
TABLES.append(("report_rollup_meta", ("name", "value"), None))
TABLES.append(("rollup_pending", ("charge_id",), None))
TABLES.extend(PROXY_TABLES)
TABLES.extend(BILL_TABLES)
"""Every data table, in an order that respects foreign keys: (name, columns, identity column)."""

KEYS: dict[str, tuple[str, ...]] = {
    "budgets": ("id",),
    "budget_windows": ("budget_id", "window_key"),
    "reservations": ("id",),
    "charges": ("id",),
    "alerts": ("id",),
    "report_rollup": ("grain", "scope", "bucket", "model", "mode", "unit", "shard"),
    "request_cache": ("fingerprint",),
    "report_rollup_meta": ("name",),
    "rollup_pending": ("charge_id",),
    **PROXY_KEYS,
    **BILL_KEYS,
}
"""The primary key of every data table: a copy reads a table a page at a time in its order."""


def migrate(cur: Cursor, backend: Backend) -> int:
    """Create or upgrade the schema in the transaction of ``cur``; returns the schema version.
    Safe to run concurrently (the backend serialises migrations)."""
    backend.lock_schema(cur)
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
    )
    cur.execute("SELECT MAX(version) FROM schema_version")
    current = cur.fetchone()[0] or 0
    known = MIGRATIONS[-1][0]
    if current > known:
        raise StorageError(
            f"this ledger was upgraded to schema {current} by a newer kling-cost; this one knows "
            f"schema {known}: upgrade kling-cost here too (pip install -U klingai-cost-controls)"
        )
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        for statement in statements:
            if callable(statement):
                statement(cur, backend.dialect)
                continue
            cur.execute(
                statement.replace("{id}", backend.id_column).replace("{without_rowid}", backend.without_rowid)
            )
        cur.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, to_ms(cur.now))
        )
        current = version
    return int(current)
