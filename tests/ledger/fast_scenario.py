"""The scenario both fast paths (PostgreSQL's functions, SQLite's lean transactions) must
write exactly as the general path does, and the dump the tests compare."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from kling_cost.ledger import Ledger
from tests.helpers import FakeClock


def warm(ledger: Ledger, scopes: list[str]) -> None:
    """Reservations on the general path (the first one sweeps), then the fast one: this
    process has seen the windows and read the budgets."""
    for _ in range(2):
        ledger.release(ledger.reserve("0.001", scopes))


def scenario(ledger: Ledger, clock: FakeClock) -> dict[str, list[tuple[Any, ...]]]:
    ledger.set_budget("project:a", limit="100", window="day", thresholds=["0.9"])
    ledger.set_budget("account", limit="1000", window="month", tz="Europe/Paris")
    warm(ledger, ["project:a"])
    meta = {"model": "kling-v2-1", "mode": "pro", "duration": "10", "audio": True, "prompt": "a cat"}
    r1 = ledger.reserve("1.5", ["project:a"], metadata=meta, catalog="kling-api", catalog_date="2026-01-01")
    clock.advance(seconds=1)
    r2 = ledger.reserve(
        "2", ["project:a"], idempotency_key="k-2", metadata={"endpoint": "text2video", "sound": "on"}
    )
    assert ledger.reserve("2", ["project:a"], idempotency_key="k-2").id == r2.id  # the same request again
    clock.advance(milliseconds=5)
    assert ledger.commit(r1, actual="1.2", task_id="t-1").actual == Decimal("1.2")
    ledger.attach_task(r2, "t-2", {"model_name": "kling-v1"})
    ledger.commit(r2)
    r3 = ledger.reserve("3", ["project:a"])
    ledger.attach_task(r3, "t-3")
    assert ledger.release(r3).status == "released"  # a failed task: a charge of 0
    r4 = ledger.reserve("1", "project:a")
    ledger.release(r4)  # never sent: no charge
    r5 = ledger.reserve("1", ["project:a"], metadata={"duration": 5, "audio": "on"})
    clock.advance(minutes=1)
    assert ledger.extend(r5, timedelta(hours=2)).expires_at == clock() + timedelta(hours=2)
    ledger.commit(r5, task_id="t-5")
    assert ledger.record_cache_hit("4", ["project:a"], idempotency_key="hit-1", task_id="t-9", metadata=meta)
    assert not ledger.record_cache_hit(
        "4", ["project:a"], idempotency_key="hit-1", task_id="t-9", metadata=meta
    )
    return dump(ledger)


def dump(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the scenario wrote, without the random reservation ids."""
    queries = {
        "reservations": "SELECT CASE WHEN idempotency_key = id THEN 'ID' ELSE idempotency_key END, amount_milli, "
        "actual_milli, status, scopes, created_at, expires_at, settled_at, task_id, windows, metadata, unit, "
        "catalog, catalog_date FROM reservations",
        "charges": "SELECT CASE WHEN idempotency_key = reservation_id THEN 'ID' ELSE idempotency_key END, "
        "status, created_at, settled_at, estimate_milli, actual_milli, scopes, task_id, kind, model, mode, "
        "duration, audio, prompt_hash, prompt_preview, metadata, unit, catalog, catalog_date, overage_milli, "
        "rollup_deferred "
        "FROM charges",
        "windows": "SELECT budget_id, window_key, used_milli, reserved_milli FROM budget_windows",
        "rollup": "SELECT scope, grain, bucket, model, mode, unit, SUM(s_n), SUM(s_est), SUM(s_act), SUM(f_n), "
        "SUM(f_est), SUM(f_act), SUM(c_n), SUM(c_est), SUM(c_act) FROM report_rollup "
        "GROUP BY scope, grain, bucket, model, mode, unit",
        "alerts": "SELECT budget_id, window_key, kind, threshold, used_milli, reserved_milli FROM alerts",
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    ledger.rollup.fold()  # PostgreSQL's charges wait in rollup_pending until a read folds them
    with ledger.transaction() as cur:
        for name, sql in queries.items():
            cur.execute(sql)
            out[name] = sorted((tuple(_plain(v) for v in row) for row in cur.fetchall()), key=repr)
    return out


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, int) else value


class SeenHook:
    """A hook of the caller's: it notes what it saw (the fast paths then step aside)."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def after_reserve(self, *args: Any) -> None:
        self.seen.append("reserve")

    def after_settle(self, *args: Any) -> None:
        self.seen.append("settle")

    def after_budget_set(self, *args: Any) -> None:
        return None

    def after_refusal(self, *args: Any) -> None:
        return None
