"""Migration 9: the proxy's tables (virtual keys, task owners, callbacks to relay).

The proxy (:mod:`kling_cost.proxy`) keeps them in the ledger so that every proxy process on
every machine sharing a PostgreSQL ledger sees the same keys, owners and relays. No secret is
stored: a bearer key is kept as its SHA-256, and the secret key of an access key is derived
from the proxy's master key (see ``proxy/keys.py``). Relays are durable: a restart carries on.
"""

from __future__ import annotations

__all__ = ["PROXY_KEYS", "PROXY_MIGRATION", "PROXY_TABLES"]

PROXY_MIGRATION: list[str] = [
    # The proxy (kling_cost.proxy): virtual keys, which key owns which task, and the
    # callbacks it relays to clients (durable: a restart carries on delivering).
    # No secret is stored: a bearer key is kept as its SHA-256, and the secret key of
    # an access key is derived from the proxy's master key (see proxy/keys.py).
    """CREATE TABLE proxy_keys (
        id {id},
        name TEXT NOT NULL UNIQUE,
        access_key TEXT NOT NULL UNIQUE,
        api_key_hash TEXT NOT NULL UNIQUE,
        salt TEXT NOT NULL,
        scopes TEXT NOT NULL,
        unit TEXT NOT NULL,
        max_per_request_milli BIGINT,
        models TEXT,
        concurrency INTEGER,
        callback_hosts TEXT,
        expires_at BIGINT,
        revoked_at BIGINT,
        created_at BIGINT NOT NULL,
        rotated_at BIGINT,
        last_used_at BIGINT
    )""",
    """CREATE TABLE proxy_tasks (
        external_task_id TEXT PRIMARY KEY,
        key_id BIGINT NOT NULL REFERENCES proxy_keys(id),
        task_id TEXT,
        endpoint TEXT NOT NULL,
        callback_url TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )""",
    "CREATE UNIQUE INDEX proxy_tasks_task ON proxy_tasks (task_id) WHERE task_id IS NOT NULL",
    "CREATE INDEX proxy_tasks_key ON proxy_tasks (key_id, created_at)",
    """CREATE TABLE proxy_relays (
        id {id},
        key_id BIGINT NOT NULL REFERENCES proxy_keys(id),
        task_id TEXT NOT NULL,
        status TEXT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at BIGINT NOT NULL,
        last_error TEXT,
        claim TEXT,
        created_at BIGINT NOT NULL,
        delivered_at BIGINT,
        UNIQUE (task_id, status)
    )""",
    "CREATE INDEX proxy_relays_due ON proxy_relays (next_at) WHERE state = 'pending'",
]

PROXY_TABLES: list[tuple[str, tuple[str, ...], str | None]] = []
PROXY_TABLES.append(
    (
        "proxy_keys",
        (
            "id",
            "name",
            "access_key",
            "api_key_hash",
            "salt",
            "scopes",
            "unit",
            "max_per_request_milli",
            "models",
            "concurrency",
            "callback_hosts",
            "expires_at",
            "revoked_at",
            "created_at",
            "rotated_at",
            "last_used_at",
        ),
        "id",
    )
)
PROXY_TABLES.append(
    (
        "proxy_tasks",
        ("external_task_id", "key_id", "task_id", "endpoint", "callback_url", "created_at", "updated_at"),
        None,
    )
)
PROXY_TABLES.append(
    (
        "proxy_relays",
        (
            "id",
            "key_id",
            "task_id",
            "status",
            "url",
            "body",
            "state",
            "attempts",
            "next_at",
            "last_error",
            "claim",
            "created_at",
            "delivered_at",
        ),
        "id",
    )
)

PROXY_KEYS: dict[str, tuple[str, ...]] = {
    "proxy_keys": ("id",),
    "proxy_tasks": ("external_task_id",),
    "proxy_relays": ("id",),
}
