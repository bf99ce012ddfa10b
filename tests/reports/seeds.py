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
