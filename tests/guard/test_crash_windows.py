"""The windows between reserve, send, accept and settle: Kling's charge is never lost,
a hold is never freed while Kling may have accepted, and nothing is paid twice (both guards,
through ``world.guard()``)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_cost import BudgetExceeded, RateLimited
from kling_cost.ledger import open_ledger
from tests.guard.conftest import World

BODY = {"model_name": "kling-v1", "prompt": "a cat", "mode": "std", "duration": "5"}


@pytest.fixture
def world(any_world: World) -> World:
    """Every test of this module runs on both ledger backends (and with both guards)."""
    return any_world


def test_a_second_caller_with_the_same_key_never_frees_the_first_ones_hold(world: World) -> None:
    world.ledger.set_budget("account", 100)
    accepted, answer = threading.Event(), threading.Event()

    def slow_answer(request: httpx.Request) -> None:
        if request.method == "POST":  # Kling accepted...
            accepted.set()
            answer.wait(10)  # ...but the answer arrives late

    first = world.guard(on_answer=slow_answer, cache=False, scopes=())
    second = world.guard(cache=False, scopes=())  # the same request: the same scopes
    body = {**BODY, "external_task_id": "job-1"}
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("a", first.create("text2video", body)))
    thread.start()
    assert accepted.wait(10)
    b = second.create("text2video", body)  # finds the task Kling accepted under job-1
    answer.set()
    thread.join(10)
    assert b.task_id == out["a"].task_id and len(world.tasks) == 1
    world.finish()
    first.wait(out["a"], poll=0.01)
    assert world.ledger.get_reservation("job-1").status == "committed"  # type: ignore[union-attr]
    assert world.ledger.usage("account").used == 1
    first.close()
    second.close()


def test_lost_answer_followed_by_another_error_keeps_and_later_commits(world: World) -> None:
    world.ledger.set_budget("account", 100)
    lost: list[str] = []

    def lose_first_answer(request: httpx.Request) -> None:
        if request.method == "POST" and not lost:
            lost.append(request.url.path)
            world.sim.state.inject(1302, times=5, scope="create")  # then Kling says "too fast"
            raise httpx.ReadTimeout("answer lost", request=request)

    guard = world.guard(on_answer=lose_first_answer, cache=False, scopes=())
    task = guard.create("text2video", {**BODY, "external_task_id": "job-3"})  # found, not refused
    assert lost and world.ledger.get_reservation("job-3").task_id == task.task_id  # type: ignore[union-attr]
    world.finish()
    guard.wait(task, poll=0.01)
    assert world.ledger.usage("account").used == 1
    guard.close()


def test_settle_pending_keeps_holds_it_cannot_check(world: World, tmp_path: Path) -> None:
    world.ledger.set_budget("account", 100)
    res = world.ledger.reserve(1, idempotency_key="job-4", metadata={"endpoint": "text2video"})
    with world.kling() as kling:
        kling.create("text2video", {**BODY, "external_task_id": "job-4"})  # crash before attach
    world.sim.state.inject(1302, times=20, scope="query")
    with world.guard(cache=False) as guard:
        report = guard.settle_pending()
    assert report.errors and world.ledger.get_reservation(res.id).status == "reserved"  # type: ignore[union-attr]


def test_orphan_expired_before_attach_is_found_and_committed(tmp_path: Path, world: World) -> None:
    from tests.helpers import FakeClock

    clock = FakeClock()
    clock.set(world.ledger.clock())
    with open_ledger(world.ledger_url, clock=clock) as ledger:
        # lifetime: the clock is the real one moved on, and may cross midnight (a new day window)
        ledger.set_budget("account", 100, "lifetime")
        ledger.reserve(
            1, idempotency_key="job-5", ttl=timedelta(minutes=1), metadata={"endpoint": "text2video"}
        )
        with world.kling() as kling:
            kling.create("text2video", {**BODY, "external_task_id": "job-5"})  # crash here
        clock.advance(minutes=2)
        assert ledger.sweep() == 1
        world.finish()
        with world.guard(ledger=ledger, cache=False, scopes=()) as guard:
            report = guard.settle_pending()
        assert len(report.committed) == 1
        assert ledger.usage("account").used == 1 and ledger.get_reservation("job-5").status == "committed"  # type: ignore[union-attr]


def test_a_running_task_keeps_its_hold_past_the_reservation_lease(world: World) -> None:
    from tests.helpers import FakeClock

    clock = FakeClock()
    clock.set(world.ledger.clock())
    with open_ledger(world.ledger_url, clock=clock) as ledger:
        # lifetime: 31 minutes on from the real time may cross midnight (a new day window)
        ledger.set_budget("account", 1, "lifetime")
        with world.guard(ledger=ledger, cache=False, scopes=(), ttl=timedelta(minutes=30)) as guard:
            task = guard.create("text2video", {**BODY, "external_task_id": "long-1"})
            clock.advance(minutes=31)  # longer than the reservation's lease: still rendering
            with pytest.raises(BudgetExceeded):
                guard.create("text2video", {**BODY, "prompt": "another", "external_task_id": "long-2"})
            world.finish()
            guard.wait(task, poll=0.01)
        u = ledger.usage("account")
        assert (u.used, u.reserved) == (1, 0)


def test_settle_pending_extends_a_lapsed_but_unswept_lease(world: World) -> None:
    from tests.helpers import FakeClock

    clock = FakeClock()
    clock.set(world.ledger.clock())
    with open_ledger(world.ledger_url, clock=clock, sweep_interval=timedelta(days=1)) as ledger:
        ledger.set_budget("account", 100)
        with world.guard(ledger=ledger, cache=False, scopes=(), task_ttl=timedelta(minutes=5)) as guard:
            guard.create("text2video", {**BODY, "external_task_id": "slow-1"})
            clock.advance(minutes=6)
            report = guard.settle_pending()
        assert report.running and not report.errors
        assert ledger.get_reservation("slow-1").expires_at > clock()  # type: ignore[union-attr]


def test_rate_limited_create_that_kling_never_saw_is_released(world: World) -> None:
    world.ledger.set_budget("account", 100)
    world.sim.state.inject(1302, times=10, scope="create")
    with world.guard(cache=False) as guard, pytest.raises(RateLimited):
        guard.create("text2video", {**BODY, "external_task_id": "job-6"})
    assert world.ledger.get_reservation("job-6").status == "released"  # type: ignore[union-attr]
    assert world.ledger.usage("account").reserved == 0
    assert Decimal(0) == world.ledger.usage("account").used
