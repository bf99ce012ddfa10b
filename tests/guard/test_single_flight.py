"""Single-flight never hangs: a caller waiting for an identical request in flight gives up on
a holder that is gone, failed or past ``CachePolicy.wait``, then sends its own request or
fails with a clear error, within a bound (both ledger backends, sync and async clients)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from typer.testing import CliRunner

from kling_cost import ServerError
from kling_cost.cache import CachePolicy
from kling_cost.cli import app
from kling_cost.guard import AsyncCostAwareClient, CostAwareClient
from kling_cost.kling import AsyncKlingClient, KlingClient, RetryPolicy
from tests.guard.conftest import SYNC_ONLY, World
from tests.guard.test_batch import ticking
from tests.servers import AK, SK, free_port

T = TypeVar("T")
BODY = {"prompt": "one shot", "model_name": "kling-v1", "mode": "std", "duration": "5"}


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``, failing the test (instead of hanging it) if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # re-raised below
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still waiting after {seconds} s: single-flight hangs")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def closed_url() -> str:
    """A loopback port nothing listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


def guard_at(world: World, url: str, **cache: Any) -> CostAwareClient:
    """A guard of the world's twin talking to ``url``."""
    return world.guard(url=url, cache=CachePolicy(wait_poll=0.01, **cache))


def test_a_request_that_never_reached_kling_frees_its_hold_and_is_not_waited_for(any_world: World) -> None:
    """Every attempt was refused a connection: Kling surely did nothing, so the hold is freed
    at once (it was kept, and a run tried again waited out the 2-minute single-flight bound
    behind it; found by review)."""
    any_world.ledger.set_budget("project:film", 100)
    unreachable = closed_url()
    with guard_at(any_world, unreachable) as first, pytest.raises(ServerError) as refused:
        first.create("text2video", BODY)
    assert refused.value.unsent
    assert any_world.ledger.reservations(status="reserved") == []
    assert any_world.ledger.usage("project:film").reserved == 0
    with (
        guard_at(any_world, unreachable) as second,
        pytest.raises(ServerError, match="could not reach Kling"),
    ):
        within(10, lambda: second.create("text2video", BODY))  # default wait of 2 min: not used
    with guard_at(any_world, any_world.url) as third:  # Kling is reachable again
        task = within(10, lambda: third.create("text2video", BODY))
        any_world.finish()
        done = third.wait(task, poll=0.01)
    assert done.succeeded and len(any_world.tasks) == 1
    assert any_world.ledger.usage("project:film").used == 1
    assert any_world.ledger.usage("project:film").reserved == 0


def _claim_without_sending(world: World, guard: CostAwareClient, key: str) -> Any:
    """What a holder killed between reserving and sending leaves: a claim and a held reservation."""
    req = guard.core.prepare("text2video", BODY)
    claimed, _ = world.ledger.cache_claim(req.fingerprint, req.endpoint, req.amount, timedelta(minutes=30))
    assert claimed
    res = world.ledger.reserve(req.amount, ["project:film"], idempotency_key=key, metadata=req.metadata)
    world.ledger.cache_attach(req.fingerprint, reservation_id=res.id)
    return res


def test_a_silent_holder_is_given_up_on_after_the_wait_bound(any_world: World) -> None:
    any_world.ledger.set_budget("project:film", 100)
    with guard_at(any_world, any_world.url, wait=timedelta(seconds=1)) as guard:
        _claim_without_sending(any_world, guard, "dead-holder")
        started = time.monotonic()
        task = within(15, lambda: guard.create("text2video", BODY))
        elapsed = time.monotonic() - started
    # waited for the holder, but only CachePolicy.wait (measured by the ledger's clock: on
    # PostgreSQL the server's, known here to within a round trip, hence the 50 ms of slack)
    assert 0.95 <= elapsed < 10
    assert len(any_world.tasks) == 1 and any_world.tasks[0].external_task_id == task.external_task_id


def test_a_holder_whose_hold_was_freed_is_not_waited_for(any_world: World) -> None:
    any_world.ledger.set_budget("project:film", 100)
    with guard_at(any_world, any_world.url) as guard:  # default wait: 2 minutes
        res = _claim_without_sending(any_world, guard, "failed-holder")
        any_world.ledger.release(res)  # it failed before Kling accepted, then died before forgetting
        within(10, lambda: guard.create("text2video", BODY))
    assert len(any_world.tasks) == 1


def test_a_holder_that_gave_up_after_kling_accepted_is_adopted(any_world: World) -> None:
    """The holder's answer was lost and it gave up: the waiter finds its task on Kling, waits
    for it and pays nothing; the holder's reservation is charged once."""
    any_world.ledger.set_budget("project:film", 100)
    with guard_at(any_world, any_world.url) as guard:
        res = _claim_without_sending(any_world, guard, "lost-answer")
        with any_world.kling() as kling:
            kling.create("text2video", {**BODY, "external_task_id": "lost-answer"})
        fp = guard.core.prepare("text2video", BODY).fingerprint
        any_world.ledger.cache_abandon(fp, res.id)
        with ticking(any_world):
            task = within(20, lambda: guard.create("text2video", BODY))
    assert task.succeeded and len(any_world.tasks) == 1
    assert task.task_id == any_world.tasks[0].task_id
    assert sorted(c.status for c in any_world.ledger.charges()) == ["cache_hit", "succeeded"]
    held = any_world.ledger.get_reservation("lost-answer")
    assert held is not None and held.status == "committed" and held.task_id == task.task_id
    assert any_world.ledger.usage("project:film").used == 1


def test_a_holder_that_failed_before_attaching_its_hold_is_not_waited_for(
    any_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller that claimed the request failed right after reserving, before noting its
    reservation on the claim: its clean-up still marks the claim abandoned (before, nothing
    matched a claim without a reservation and waiters waited ``CachePolicy.wait``)."""
    any_world.ledger.set_budget("project:film", 100)
    attach = any_world.ledger.cache_attach
    failures = iter([RuntimeError("the disk is full")])

    def failing_once(*args: Any, **kwargs: Any) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        attach(*args, **kwargs)

    monkeypatch.setattr(any_world.ledger, "cache_attach", failing_once)
    with guard_at(any_world, any_world.url, wait=timedelta(minutes=5)) as guard:
        with pytest.raises(RuntimeError, match="disk is full"):
            guard.create("text2video", BODY)
        [held] = any_world.ledger.reservations(status="reserved")  # nothing sent: kept, Kling unasked
        task = within(15, lambda: guard.create("text2video", BODY))
    assert len(any_world.tasks) == 1 and any_world.tasks[0].external_task_id == task.external_task_id
    assert task.external_task_id != held.idempotency_key


@pytest.mark.parametrize("twin", ["async"])
def test_a_cancelled_async_holder_is_not_waited_for(any_world: World) -> None:
    """An async caller cancelled (an anyio cancel scope, a timeout) while its reservation was
    being written: its clean-up runs shielded, so it still reaches the ledger and an identical
    request asks Kling at once. Before, the clean-up's own ledger calls were cancelled at once
    and waiters waited ``CachePolicy.wait`` (5 minutes here)."""
    ledger = any_world.ledger
    ledger.set_budget("project:film", 100)
    slow = threading.Event()

    class SlowReserve:
        def after_reserve(self, *args: Any) -> None:
            if slow.is_set():
                time.sleep(0.5)

        def after_settle(self, *args: Any) -> None: ...
        def after_budget_set(self, *args: Any) -> None: ...
        def after_refusal(self, *args: Any) -> None: ...

    ledger.hooks.append(SlowReserve())

    def guard() -> AsyncCostAwareClient:
        kling = AsyncKlingClient(AK, SK, base_url=any_world.url, retry=RetryPolicy(base_delay=0))
        policy = CachePolicy(wait=timedelta(minutes=5), wait_poll=0.01)
        return AsyncCostAwareClient(kling, ledger, scopes=["project:film"], cache=policy)

    async def main() -> tuple[bool, Any]:
        async with guard() as first, guard() as second:
            slow.set()
            with anyio.move_on_after(0.1) as scope:
                await first.create("text2video", BODY)
            slow.clear()
            with anyio.fail_after(15):
                return scope.cancelled_caught, await second.create("text2video", BODY)

    cancelled, task = anyio.run(main)
    assert cancelled
    assert len(any_world.tasks) == 1 and any_world.tasks[0].external_task_id == task.external_task_id
    [held] = ledger.reservations(status="reserved", limit=None)[-1:]
    assert held.idempotency_key != task.external_task_id  # the cancelled one, never sent


def test_cache_policy_wait_must_be_positive() -> None:
    from kling_cost import ValidationError

    with pytest.raises(ValidationError, match=r"CachePolicy\.wait "):
        CachePolicy(wait=timedelta(0))


@SYNC_ONLY  # both Kling clients, no guard
def test_kling_client_reads_the_base_url_from_the_environment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_BASE_URL", world.url)
    with KlingClient(AK, SK) as kling:
        assert kling.base_url == world.url
        assert kling.text_to_video("from the environment", model_name="kling-v1").task_id
    assert AsyncKlingClient(AK, SK).base_url == world.url
    unreachable = closed_url()
    with KlingClient(AK, SK, base_url=unreachable, retry=RetryPolicy.off()) as kling:  # the argument wins
        assert kling.base_url == unreachable
        with pytest.raises(ServerError, match="could not reach Kling"):
            kling.text_to_video("explicit", model_name="kling-v1")
    assert len(world.tasks) == 1


@SYNC_ONLY  # the CLI
def test_settle_exits_non_zero_when_something_failed_to_settle(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    # settle retries a refused connection with the default backoff (1 + 2 + 4 s): the same
    # retries, without the waits
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, retry_number: 0.0)
    world.ledger.reserve(1, ["project:film"], idempotency_key="job-1", metadata={"endpoint": "text2video"})
    runner = CliRunner()
    failed = runner.invoke(app, ["settle", "--ledger", world.ledger_url, "--base-url", closed_url()])
    assert failed.exit_code == 1, failed.output
    assert "could not be settled" in failed.stderr and "errors 1" in failed.stdout
    failed_json = runner.invoke(
        app, ["settle", "--ledger", world.ledger_url, "--base-url", closed_url(), "--json"]
    )
    assert failed_json.exit_code == 1 and '"errors"' in failed_json.stdout
    assert world.ledger.get_reservation("job-1").status == "reserved"  # type: ignore[union-attr]
    ok = runner.invoke(app, ["settle", "--ledger", world.ledger_url, "--base-url", world.url])
    assert ok.exit_code == 0, ok.output
