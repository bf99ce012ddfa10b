"""Migration 11: the PostgreSQL ledger's one-round-trip operations, as server-side functions.

Each function is the whole transaction of one common operation, sent as one statement on an
autocommit connection (see :mod:`.pg_fast`): it runs atomically (a statement is its own
transaction) and decides by the server's time (``now()``) unless the ledger's injected clock
gives ``p_now``. Each does what the general Python path (``holds.py``, ``settle.py`` and
the two built-in hooks) does for the common case, and nothing else:

* ``kling_reserve``: checks that the budgets of the scopes are exactly the ones the caller
  priced against (ids and row versions: ``xmin``, which every change of a budget row renews),
  locks them (``FOR KEY SHARE``, id order), writes the reservation and holds the amount on each
  window with the same conditional upsert as ``Holds.hold``.
* ``kling_commit`` / ``kling_release``: move a held reservation and its windows (in the
  windows' budget-id order), write its charge row and note it for the report rollup's fold
  (``rollup_pending``, as ``RollupHook`` does on PostgreSQL; see :mod:`.rollup_fold`).
* ``kling_cache_hit``: the ``cached`` reservation, its charge of 0, noted for the fold.

Anything unusual is *declined* (SQLSTATE ``KC001``, the statement rolls back whole and the
caller takes the general path, which has every rule): a refusal, a threshold crossed (the
alert outbox must write), an idempotency key already used, a budget changed since the caller
read it, a window that ended, a lapsed lease, an actual above the estimate (an overage),
metadata other than the caller's (the charge's columns were derived from it). The
``p_marks`` of ``kling_reserve`` are the threshold levels of the budgets (``p_mark_of``: which
budget, 1-based), computed by :class:`~.outbox.AlertOutbox`; a hold that reaches one declines.

On SQLite this migration does nothing (its transactions have no round trips to save).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import Cursor

__all__ = [
    "DECLINED",
    "FAST_VERSION",
    "SERVER_MS",
    "SHARDS",
    "SHARD_MIGRATION",
    "STALE",
    "install_fast_path",
]

FAST_VERSION = 12
"""The schema version from which the functions exist (11 made them, 12 sharded the rollup
rows they wrote, 13 made them note their charges for the fold instead: ``install_fast_path``
runs again each time)."""

DECLINED = "KC001"
"""The SQLSTATE of a declined call: the caller takes the general path."""

STALE = "KC002"
"""The SQLSTATE of a call priced against budgets that changed since: read them again."""

SERVER_MS = (
    "(extract(epoch FROM date_trunc('second', now()))::bigint * 1000 "
    "+ mod(extract(microseconds FROM now())::bigint, 1000000) / 1000)"
)
"""The server's time in whole milliseconds, rounded down as :func:`~kling_cost.timestamps.to_ms`
does, exactly on every version (``extract`` returns a float before PostgreSQL 14: only whole
numbers pass through it here)."""

_NOW = f"COALESCE(p_now, {SERVER_MS})"

SHARDS = 8
"""How many rows of ``report_rollup`` one group (scope, grain, bucket, model, mode, unit) may
have on PostgreSQL: from schema 12, each connection added to the row of its shard
(``pg_backend_pid() % 8``), so that commits of many processes did not queue on the lock of
one shared row. From 13 no commit writes a rollup row (the fold writes shard 0); the rows of
the other shards stay, and reads sum the shards."""

_SETTLE_WINDOWS = """
    FOR v_bid, v_key IN SELECT (e ->> 0)::bigint, e ->> 1 FROM json_array_elements(r.windows::json) e LOOP
        UPDATE budget_windows SET reserved_milli = reserved_milli - r.amount_milli,
            used_milli = used_milli + CASE WHEN (SELECT unit FROM budgets WHERE id = v_bid) = r.unit
                THEN v_spent ELSE 0 END
        WHERE budget_id = v_bid AND window_key = v_key;
    END LOOP;
"""

_CHARGE_PARAMS = (
    "p_kind text, p_model text, p_mode text, p_duration integer, p_audio integer, "
    "p_prompt_hash text, p_prompt_preview text"
)


def _charge(status: str, estimate: str, actual: str, task: str) -> str:
    """The charge row, as ``settle.py`` writes it, noted for the report rollup's fold (see
    :mod:`.rollup_fold`); ``v_now`` is the settlement time."""
    return f"""
    INSERT INTO charges (reservation_id, idempotency_key, status, created_at, settled_at,
        estimate_milli, actual_milli, scopes, task_id, kind, model, mode, duration, audio,
        prompt_hash, prompt_preview, metadata, unit, catalog, catalog_date, overage_milli)
    VALUES (r.id, COALESCE(r.idempotency_key, r.id), '{status}', r.created_at, v_now, {estimate},
        {actual}, r.scopes, {task}, p_kind, p_model, p_mode, p_duration, p_audio, p_prompt_hash,
        p_prompt_preview, r.metadata, r.unit, r.catalog, r.catalog_date, 0)
    RETURNING id INTO v_charge;
    INSERT INTO rollup_pending (charge_id) VALUES (v_charge);
"""


def _declined(why: str) -> str:
    return f"RAISE EXCEPTION 'declined: {why}' USING ERRCODE = '{DECLINED}';"


RESERVE = f"""
CREATE OR REPLACE FUNCTION kling_reserve(
    p_id text, p_key text, p_milli bigint, p_scopes text[], p_scopes_json text, p_meta text,
    p_unit text, p_catalog text, p_catalog_date text, p_ttl bigint, p_now bigint,
    p_budgets bigint[], p_versions bigint[], p_limits bigint[], p_keys text[], p_starts bigint[],
    p_ends bigint[], p_windows text, p_marks bigint[], p_mark_of integer[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := {_NOW};
    v_ids bigint[];
    v_versions bigint[];
    v_level bigint;
    v_created bigint;
    i integer;
    j integer;
BEGIN
    SELECT COALESCE(array_agg(b.id ORDER BY b.id), '{{}}'),
           COALESCE(array_agg(b.version ORDER BY b.id), '{{}}')
    INTO v_ids, v_versions
    FROM (SELECT id, xmin::text::bigint AS version FROM budgets WHERE scope = ANY(p_scopes)
          ORDER BY id FOR KEY SHARE) AS b;
    IF v_ids IS DISTINCT FROM p_budgets OR v_versions IS DISTINCT FROM p_versions THEN
        RAISE EXCEPTION 'declined: the budgets changed' USING ERRCODE = '{STALE}';
    END IF;
    FOR i IN 1 .. COALESCE(array_length(p_budgets, 1), 0) LOOP
        IF v_now < p_starts[i] OR v_now >= p_ends[i] THEN
            RAISE EXCEPTION 'declined: another window' USING ERRCODE = '{STALE}';
        END IF;
    END LOOP;
    INSERT INTO reservations (id, idempotency_key, amount_milli, status, scopes, created_at,
        expires_at, windows, metadata, unit, catalog, catalog_date)
    VALUES (p_id, p_key, p_milli, 'reserved', p_scopes_json, v_now, v_now + p_ttl, p_windows,
        p_meta, p_unit, p_catalog, p_catalog_date)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        -- This very call landed before (its answer was lost with the connection): the same
        -- reservation, held once. Otherwise the key names another reservation.
        SELECT created_at INTO v_created FROM reservations
        WHERE id = p_id AND amount_milli = p_milli AND scopes = p_scopes_json AND metadata = p_meta;
        IF FOUND THEN
            RETURN v_created;
        END IF;
        {_declined("the idempotency key was used before")}
    END IF;
    FOR i IN 1 .. COALESCE(array_length(p_budgets, 1), 0) LOOP
        IF p_milli > p_limits[i] THEN
            {_declined("over the limit")}
        END IF;
        INSERT INTO budget_windows (budget_id, window_key, used_milli, reserved_milli)
        VALUES (p_budgets[i], p_keys[i], 0, p_milli)
        ON CONFLICT (budget_id, window_key) DO UPDATE
            SET reserved_milli = budget_windows.reserved_milli + excluded.reserved_milli
            WHERE budget_windows.used_milli + budget_windows.reserved_milli
                + excluded.reserved_milli <= p_limits[i]
        RETURNING used_milli + reserved_milli INTO v_level;
        IF NOT FOUND THEN
            {_declined("over the limit")}
        END IF;
        FOR j IN 1 .. COALESCE(array_length(p_marks, 1), 0) LOOP
            IF p_mark_of[j] = i AND v_level - p_milli < p_marks[j] AND p_marks[j] <= v_level THEN
                {_declined("a threshold was crossed")}
            END IF;
        END LOOP;
    END LOOP;
    RETURN v_now;
END
$$
"""

_DECLARE_SETTLE = """
DECLARE
    v_now bigint := {now};
    v_spent bigint;
    v_bid bigint;
    v_key text;
    v_charge bigint;
    r reservations;
"""

COMMIT = f"""
CREATE OR REPLACE FUNCTION kling_commit(
    p_id text, p_actual bigint, p_task text, p_now bigint, p_meta text, {_CHARGE_PARAMS}
) RETURNS SETOF reservations LANGUAGE plpgsql AS $$
{_DECLARE_SETTLE.format(now=_NOW)}
BEGIN
    UPDATE reservations SET status = 'committed', actual_milli = COALESCE(p_actual, amount_milli),
        settled_at = v_now, task_id = COALESCE(p_task, task_id)
    WHERE id = p_id AND status = 'reserved' AND expires_at > v_now AND metadata = p_meta
        AND COALESCE(p_actual, amount_milli) <= amount_milli
    RETURNING * INTO r;
    IF NOT FOUND THEN
        {_declined("not a held reservation on a live lease, or an overage")}
    END IF;
    v_spent := r.actual_milli;
    {_SETTLE_WINDOWS}
    {_charge("succeeded", "r.amount_milli", "v_spent", "r.task_id")}
    RETURN NEXT r;
END
$$
"""

RELEASE = f"""
CREATE OR REPLACE FUNCTION kling_release(
    p_id text, p_failed boolean, p_now bigint, p_meta text, {_CHARGE_PARAMS}
) RETURNS SETOF reservations LANGUAGE plpgsql AS $$
{_DECLARE_SETTLE.format(now=_NOW)}
BEGIN
    UPDATE reservations SET status = 'released', actual_milli = NULL, settled_at = v_now
    WHERE id = p_id AND status = 'reserved'
    RETURNING * INTO r;
    IF NOT FOUND THEN
        {_declined("not a held reservation")}
    END IF;
    v_spent := 0;
    {_SETTLE_WINDOWS}
    IF p_failed OR (p_failed IS NULL AND r.task_id IS NOT NULL) THEN
        IF p_meta IS NULL OR r.metadata <> p_meta THEN
            {_declined("the metadata changed")}
        END IF;
        {_charge("failed", "r.amount_milli", "0", "r.task_id")}
    END IF;
    RETURN NEXT r;
END
$$
"""

CACHE_HIT = f"""
CREATE OR REPLACE FUNCTION kling_cache_hit(
    p_id text, p_key text, p_milli bigint, p_scopes text[], p_scopes_json text, p_meta text,
    p_task text, p_unit text, p_catalog text, p_catalog_date text, p_now bigint, {_CHARGE_PARAMS}
) RETURNS boolean LANGUAGE plpgsql AS $$
{_DECLARE_SETTLE.format(now=_NOW)}
BEGIN
    INSERT INTO reservations (id, idempotency_key, amount_milli, actual_milli, status, scopes,
        created_at, expires_at, settled_at, task_id, windows, metadata, unit, catalog, catalog_date)
    VALUES (p_id, p_key, p_milli, 0, 'cached', p_scopes_json, v_now, v_now, v_now, p_task, '[]',
        p_meta, p_unit, p_catalog, p_catalog_date)
    ON CONFLICT DO NOTHING
    RETURNING * INTO r;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM reservations WHERE id = p_id AND status = 'cached') THEN
            RETURN true;  -- this very call landed before (its answer was lost)
        END IF;
        {_declined("the idempotency key was used before")}
    END IF;
    {_charge("cache_hit", "p_milli", "0", "p_task")}
    RETURN true;
END
$$
"""

FUNCTIONS = (RESERVE, COMMIT, RELEASE, CACHE_HIT)

_ROLLUP_SUMS = "s_n, s_est, s_act, f_n, f_est, f_act, c_n, c_est, c_act"
SHARD_MIGRATION: list[str] = [
    # Migration 12: the rollup's rows get a shard, last in the key (see SHARDS); the general
    # path (and SQLite, one writer at a time) writes shard 0. Rebuilt, as SQLite cannot change
    # a primary key.
    """CREATE TABLE report_rollup_v12 (
        scope TEXT NOT NULL,
        grain SMALLINT NOT NULL,
        bucket BIGINT NOT NULL,
        model TEXT NOT NULL,
        mode TEXT NOT NULL,
        unit TEXT NOT NULL DEFAULT 'units',
        shard SMALLINT NOT NULL DEFAULT 0,
        s_n BIGINT NOT NULL DEFAULT 0,
        s_est BIGINT NOT NULL DEFAULT 0,
        s_act BIGINT NOT NULL DEFAULT 0,
        f_n BIGINT NOT NULL DEFAULT 0,
        f_est BIGINT NOT NULL DEFAULT 0,
        f_act BIGINT NOT NULL DEFAULT 0,
        c_n BIGINT NOT NULL DEFAULT 0,
        c_est BIGINT NOT NULL DEFAULT 0,
        c_act BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (grain, scope, bucket, model, mode, unit, shard)
    ){without_rowid}""",
    f"INSERT INTO report_rollup_v12 (scope, grain, bucket, model, mode, unit, shard, {_ROLLUP_SUMS}) "
    f"SELECT scope, grain, bucket, model, mode, unit, 0, {_ROLLUP_SUMS} FROM report_rollup",
    "DROP TABLE report_rollup",
    "ALTER TABLE report_rollup_v12 RENAME TO report_rollup",
]


def install_fast_path(cur: Cursor, dialect: str) -> None:
    """Create (or replace) the functions; nothing on SQLite."""
    if dialect != "postgresql":
        return
    for function in FUNCTIONS:
        cur.execute(function)
