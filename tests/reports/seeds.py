"""Ledger contents shared by the report, CLI and dashboard tests."""

from __future__ import annotations

from datetime import UTC, datetime

from kling_cost.ledger import Ledger
from tests.helpers import FakeClock

__all__ = ["seed_mixed"]


def seed_mixed(ledger: Ledger, clock: FakeClock) -> None:
    """Two days; the app's credits on project:film, Kling's API units on project:api; key:k1
    spends both. No budget on the account (it would take one unit only). project:film crosses
    50 % of its daily limit on both days and 80 % on the second (alerts in credits)."""
    ledger.set_budget("project:film", 100, "day", unit="credits")
    ledger.set_budget("project:api", 100, "day")  # units
    for day in (14, 15):
        clock.set(datetime(2026, 6, day, 10, 0, tzinfo=UTC))
        film = ledger.reserve(
            70,
            ["project:film", "key:k1"],
            unit="credits",
            catalog="kling-app-credits",
            catalog_date="2026-04-23",
            metadata={"model": "kling-v2-1", "mode": "pro", "duration": 10, "prompt": f"fox {day}"},
        )
        ledger.commit(film, 70, task_id=f"film-{day}")
        clock.advance(hours=1)
        api = ledger.reserve(
            "2.5",
            ["project:api", "key:k1"],
            catalog="kling-api",
            catalog_date="2026-04-23",
            metadata={"model": "kling-v2-1", "mode": "pro", "duration": 5, "prompt": f"owl {day}"},
        )
        ledger.commit(api, "3", task_id=f"api-{day}")
        clock.advance(hours=1)
    failed = ledger.reserve(25, ["project:film"], unit="credits", metadata={"model": "kling-v2-1"})
    ledger.attach_task(failed, "film-failed")
    ledger.release(failed)
    ledger.record_cache_hit("1.5", ["project:api"], unit="units", metadata={"model": "kling-v1-6"})
    clock.set(datetime(2026, 6, 15, 20, 0, tzinfo=UTC))


def seed_glance(ledger: Ledger, clock: FakeClock) -> None:
    """Two weeks with gaps, in units, no key scope: what "At a glance" and the text chart read.

    Today (2026-06-15) 25 units against 32.725 yesterday; project:ads's day budget (6) is the
    closest to its limit (5 used: 83.3 %), account's (40) at 75 % with 5 reserved; the five
    costliest prompts of the period cost 35 (twice, on two models), 20, 12.5, 10 (four times)
    and 0.125 (a sixth, 0.1, is left out; so are a failed and a cached prompt)."""
    ledger.set_budget("account", 40, "day")
    ledger.set_budget("project:film", 300, "month")
    ledger.set_budget("project:ads", 6, "day")
    plan = [
        (3, "project:film", "kling-v1-6", "a red fox runs through snow", "15", "15"),
        (10, "project:ads", "kling-v1-6", "product shot of a shoe", "2.5", "2.5"),
        (10, "project:ads", "kling-v1-6", "product shot of a shoe", "2.5", "2.5"),
        (14, "project:film", "kling-v2-1", "a red fox runs through snow", "20", "20"),
        (14, "project:film", "kling-v2-1", "city at night, rain", "10", "12.5"),
        (14, "project:ads", "kling-v1", "logo sketch", "0.125", "0.125"),
        (14, "project:ads", "kling-v1", "a cat", "0.1", "0.1"),
        (15, "project:film", "kling-v2-6", "dragon over the mountains", "20", "20"),
        (15, "project:ads", "kling-v1-6", "product shot of a shoe", "2.5", "2.5"),
        (15, "project:ads", "kling-v1-6", "product shot of a shoe", "2.5", "2.5"),
    ]
    hour = 8
    for day, scope, model, prompt, est, act in plan:
        hour = hour + 1 if clock().day == day else 8
        clock.set(datetime(2026, 6, day, hour, 0, tzinfo=UTC))
        meta = {"model": model, "mode": "std", "duration": 5, "prompt": prompt}
        res = ledger.reserve(est, [scope], metadata=meta)
        ledger.commit(res, act, task_id=f"t-{day}-{hour}")
    failed = ledger.reserve(
        "15", ["project:film"], metadata={"model": "kling-v2-6", "prompt": "storm at sea"}
    )
    ledger.attach_task(failed, "t-failed")
    ledger.release(failed)
    ledger.record_cache_hit("20", ["project:film"], metadata={"model": "kling-v2-1", "prompt": "a fox"})
    clock.set(datetime(2026, 6, 15, 16, 0, tzinfo=UTC))
    ledger.reserve("5", ["project:film"], metadata={"model": "kling-v2-6", "prompt": "still running"})
