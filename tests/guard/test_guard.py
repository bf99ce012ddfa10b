from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from kling_cost import BudgetExceeded, ClientClosed, InsufficientBalance, KlingCostError, PricingError
from tests.guard.conftest import World


@pytest.fixture
def world(any_world: World) -> World:
    """Every test of this module runs on both ledger backends (and with both guards)."""
    return any_world


def test_create_wait_commits_what_kling_charged(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    with world.guard() as guard:
        task = guard.text_to_video("a red fox in snow", model_name="kling-v2-6", mode="pro", duration=5)
        res = world.ledger.get_reservation(task.external_task_id or "")
        assert res is not None and res.status == "reserved" and res.task_id == task.task_id
        assert world.ledger.usage("project:film").reserved == Decimal("2.5")
        world.finish()
        done = guard.wait(task, poll=0.01)
    assert done.succeeded and done.final_unit_deduction == Decimal("2.5")
    u = world.ledger.usage("project:film")
    assert (u.used, u.reserved) == (Decimal("2.5"), 0)
    [charge] = world.ledger.charges()
    assert (charge.status, charge.actual, charge.estimate, charge.task_id) == (
        "succeeded",
        Decimal("2.5"),
        Decimal("2.5"),
        task.task_id,
    )
    assert charge.metadata["actual_source"] == "kling"
    assert charge.prompt_preview == "a red fox in snow"


def test_refused_before_anything_is_sent(world: World) -> None:
    world.ledger.set_budget("project:film", 2)
    with world.guard() as guard, pytest.raises(BudgetExceeded) as info:
        guard.text_to_video("too dear", model_name="kling-v2-6", mode="pro", duration=5)
    assert info.value.scope == "project:film"
    assert world.tasks == []
    assert world.ledger.usage("project:film").reserved == 0


def test_invalid_request_never_reserves(world: World) -> None:
    with world.guard() as guard, pytest.raises(PricingError):
        guard.text_to_video("x", model_name="kling-v2-6", duration=7)
    assert world.ledger.reservations() == [] and world.tasks == []


def test_client_per_request_maximum(world: World) -> None:
    with world.guard(max_per_request="2") as guard, pytest.raises(BudgetExceeded) as info:
        guard.text_to_video("long", model_name="kling-v2-6", mode="pro", duration=10)
    assert info.value.reason == "max_per_request" and world.tasks == []


def test_failed_task_is_released_and_costs_nothing(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    world.sim.state.fail_next(1)
    with world.guard() as guard:
        task = guard.text_to_video("doomed", model_name="kling-v1")
        world.finish()
        done = guard.wait(task, poll=0.01)
    assert done.failed
    u = world.ledger.usage("project:film")
    assert (u.used, u.reserved) == (0, 0)
    [charge] = world.ledger.charges()
    assert (charge.status, charge.actual) == ("failed", 0)


def test_error_before_acceptance_releases(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    world.sim.state.inject(1102, times=1, scope="create")
    with world.guard() as guard, pytest.raises(InsufficientBalance):
        guard.text_to_video("no units left", model_name="kling-v1")
    assert world.ledger.usage("project:film").reserved == 0
    assert world.ledger.charges() == []
    [res] = world.ledger.reservations()
    assert res.status == "released"


def test_identical_request_is_served_from_the_cache(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    with world.guard() as guard:
        first = guard.text_to_video("the same shot", model_name="kling-v2-6", mode="std", duration=5)
        world.finish()
        guard.wait(first, poll=0.01)
        again = guard.text_to_video("the  same shot ", model_name="kling-v2-6", mode="standard", duration="5")
    assert again.task_id == first.task_id and len(world.tasks) == 1
    charges = world.ledger.charges()
    assert [c.status for c in charges] == ["succeeded", "cache_hit"]
    assert charges[1].saved == Decimal("1.5") and charges[1].actual == 0
    assert world.ledger.usage("project:film").used == Decimal("1.5")


def test_dedup_off_pays_for_each(world: World) -> None:
    with world.guard(cache=False) as guard:
        guard.text_to_video("variation", model_name="kling-v1")
        guard.text_to_video("variation", model_name="kling-v1")
    assert len(world.tasks) == 2


def test_identical_requests_in_flight_share_one_task(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        try:
            with world.guard() as guard:
                start.wait()
                task = guard.text_to_video("one shot, four callers", model_name="kling-v1")
                results.append(guard.wait(task, poll=0.01).task_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = threading.Event()
    while len(world.tasks) < 1 and not deadline.wait(0.01):
        pass
    deadline.wait(0.3)
    world.finish()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert len(world.tasks) == 1 and len(set(results)) == 1 and len(results) == 4
    statuses = sorted(c.status for c in world.ledger.charges())
    assert statuses == ["cache_hit", "cache_hit", "cache_hit", "succeeded"]
    assert world.ledger.usage("project:film").used == 1


def test_settle_pending_finishes_what_a_dead_process_left(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    guard = world.guard()
    ok = guard.text_to_video("will succeed", model_name="kling-v1")
    world.sim.state.fail_next(1)
    bad = guard.text_to_video("will fail", model_name="kling-v1-6")
    guard.close()  # the process "dies" here: nobody waits for the tasks
    world.finish()
    with world.guard() as later:
        report = later.settle_pending()
    assert sorted(report.committed + report.released) == sorted(
        [
            world.ledger.get_reservation(ok.external_task_id or "").id,  # type: ignore[union-attr]
            world.ledger.get_reservation(bad.external_task_id or "").id,
        ]
    )  # type: ignore[union-attr]
    u = world.ledger.usage("project:film")
    assert (u.used, u.reserved) == (1, 0)
    assert sorted(c.status for c in world.ledger.charges()) == ["failed", "succeeded"]


def test_same_external_task_id_is_never_paid_twice(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    with world.guard(cache=False) as guard:
        a = guard.text_to_video("keyed", model_name="kling-v1", external_task_id="order-42")
        b = guard.text_to_video("keyed", model_name="kling-v1", external_task_id="order-42")
    assert a.task_id == b.task_id and len(world.tasks) == 1
    assert world.ledger.usage("project:film").reserved == 1


@pytest.mark.parametrize("twin", ["async"])
def test_async_client_same_flow(world: World) -> None:
    """The async guard as an application uses it: ``async with``, awaited calls."""
    import asyncio

    from kling_cost.guard import AsyncCostAwareClient
    from kling_cost.kling import AsyncKlingClient, RetryPolicy
    from tests.servers import AK, SK

    world.ledger.set_budget("project:film", 100)

    async def main() -> tuple[str, str, int]:
        kling = AsyncKlingClient(AK, SK, base_url=world.url, retry=RetryPolicy(base_delay=0))
        async with AsyncCostAwareClient(kling, world.ledger, scopes=["project:film"]) as guard:
            task = await guard.text_to_video("async fox", model_name="kling-v2-6", mode="pro", duration=10)
            world.finish()
            done = await guard.wait(task, poll=0.01)
            again = await guard.text_to_video("async fox", model_name="kling-v2-6", mode="pro", duration=10)
            return done.task_status, again.task_id, len(world.tasks)

    status, again_id, count = asyncio.run(main())
    assert status == "succeed" and count == 1 and again_id == world.tasks[0].task_id
    assert world.ledger.usage("project:film").used == 5
    assert [c.status for c in world.ledger.charges()] == ["succeeded", "cache_hit"]


def test_a_closed_guard_refuses_before_holding_anything(world: World) -> None:
    """Before: httpx's bare RuntimeError escaped the error root, and the hold stayed for its
    whole lease (the guard asked Kling with the same closed client, could not tell, and kept it)."""
    world.ledger.set_budget("project:film", 10)
    guard = world.guard()
    guard.text_to_video("first", model_name="kling-v1")
    guard.close()
    assert guard.client.closed
    with pytest.raises(ClientClosed, match="closed") as info:
        guard.text_to_video("after close", model_name="kling-v1")
    assert isinstance(info.value, KlingCostError) and isinstance(info.value, RuntimeError)
    assert world.ledger.usage("project:film").reserved == 1  # the first request's hold only
    assert len(world.ledger.reservations()) == 1 and len(world.tasks) == 1
    with pytest.raises(ClientClosed):
        guard.get_task("text2video", world.tasks[0].task_id)


def test_a_client_closed_while_the_guard_reserved_frees_the_hold(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed between the guard's check and the send: the client refuses before sending, so
    the hold is freed at once."""
    world.ledger.set_budget("project:film", 10)
    guard = world.guard()
    answers = iter([False])  # open when the guard looks, closed when the client sends
    monkeypatch.setattr(type(guard.client), "closed", property(lambda self: next(answers, True)))
    with pytest.raises(ClientClosed):
        guard.text_to_video("raced", model_name="kling-v1")
    [held] = world.ledger.reservations()
    assert held.status == "released" and world.ledger.usage("project:film").reserved == 0
    assert world.tasks == []
    monkeypatch.undo()
    guard.close()
