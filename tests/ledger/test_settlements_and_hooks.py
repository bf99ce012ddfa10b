from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from kling_cost import BudgetExceeded
from kling_cost.ledger import Ledger
from kling_cost.ledger.hooks import Refusal, SettledCharge, WindowState
from kling_cost.ledger.records import BudgetRow, ReservationRow


def test_failed_task_is_recorded_as_a_refunded_charge(ledger: Ledger) -> None:
    ledger.set_budget("account", 100)
    r = ledger.reserve(35, metadata={"model": "kling-v2-6", "mode": "pro", "duration": "5"})
    ledger.attach_task(r, "task-f")
    ledger.release(r)
    [charge] = ledger.charges()
    assert (charge.status, charge.actual, charge.estimate, charge.task_id) == ("failed", 0, 35, "task-f")
    assert (charge.model, charge.mode, charge.duration) == ("kling-v2-6", "pro", 5)
    never_sent = ledger.reserve(10)
    ledger.release(never_sent)  # no task: not a generation, no charge row
    assert len(ledger.charges()) == 1
    assert ledger.usage("account").used == 0


def test_cache_hits_cost_nothing_and_record_the_saving(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 10)
    ledger.record_cache_hit(Decimal("3.5"), ["project:film"], task_id="t-1", metadata={"prompt": "x"})
    [hit] = ledger.charges("project:film")
    assert (hit.status, hit.actual, hit.saved, hit.task_id) == ("cache_hit", 0, Decimal("3.5"), "t-1")
    assert ledger.usage("project:film").used == 0
    assert hit.prompt_hash is not None


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.fail_on = fail_on

    def _note(self, name: str, data: Any) -> None:
        self.events.append((name, data))
        if name == self.fail_on:
            raise RuntimeError(f"hook failed on {name}")

    def after_reserve(
        self, cur: Any, now: datetime, reservation: ReservationRow, states: Sequence[WindowState]
    ) -> None:
        self._note(
            "reserve",
            (reservation.amount_milli, [(s.budget.scope, s.used_milli, s.reserved_milli) for s in states]),
        )

    def after_settle(
        self, cur: Any, now: datetime, charge: SettledCharge, states: Sequence[WindowState]
    ) -> None:
        self._note(
            "settle", (charge.status, charge.actual_milli, [(s.used_milli, s.reserved_milli) for s in states])
        )

    def after_budget_set(
        self, cur: Any, now: datetime, budget: BudgetRow, previous: BudgetRow | None
    ) -> None:
        self._note("budget", (budget.limit_milli, None if previous is None else previous.limit_milli))

    def after_refusal(self, cur: Any, now: datetime, refusal: Refusal, scopes: Sequence[str]) -> None:
        self._note(
            "refusal", (refusal.scope, refusal.reason, refusal.requested_milli, refusal.available_milli)
        )


def test_hooks_see_every_change_with_the_counters(ledger: Ledger) -> None:
    rec = Recorder()
    ledger.hooks.append(rec)
    ledger.set_budget("account", 10)
    ledger.set_budget("account", 20)
    r = ledger.reserve(8)
    ledger.commit(r, 7)
    with pytest.raises(BudgetExceeded):
        ledger.reserve(14)
    assert rec.events == [
        ("budget", (10_000, None)),
        ("budget", (20_000, 10_000)),
        ("reserve", (8000, [("account", 0, 8000)])),
        ("settle", ("succeeded", 7000, [(7000, 0)])),
        ("refusal", ("account", "limit", 14_000, 13_000)),
    ]


def test_a_failing_hook_rolls_the_change_back(ledger: Ledger) -> None:
    ledger.set_budget("account", 10)
    ledger.hooks.append(Recorder(fail_on="settle"))
    r = ledger.reserve(5)
    with pytest.raises(RuntimeError):
        ledger.commit(r, 5)
    u = ledger.usage("account")
    assert (u.used, u.reserved) == (0, 5) and ledger.charges() == []
