"""The client against the simulator in this process (uvicorn in a thread, manual clock)."""

from __future__ import annotations

from decimal import Decimal

import anyio
import httpx
import pytest

from kling_cost.errors import (
    ClientClosed,
    ConcurrencyLimited,
    InsufficientBalance,
    InvalidRequest,
    RateLimited,
    ServerError,
    TaskTimeout,
)
from kling_cost.kling import AsyncKlingClient, KlingClient, RetryPolicy, parse_callback, verify_webhook
from tests.kling.conftest import Running, start
from tests.servers import AK, SK, Receiver, serve


def test_lifecycle_and_billing_follow_the_clock(running: Running) -> None:
    with running.client() as client:
        task = client.text_to_video("a cat surfing", model_name="kling-v2-6", mode="std", duration=5)
        assert task.task_status == "submitted"
        assert task.endpoint == "text2video"
        assert task.final_unit_deduction is None
        running.advance(2)
        assert client.get_task("text2video", task.task_id).task_status == "processing"
        running.advance(8)
        done = client.get_task("text2video", task.task_id)
    assert done.succeeded and done.done
    assert done.final_unit_deduction == Decimal("1.5")
    assert isinstance(done.final_unit_deduction, Decimal)
    assert done.videos[0].url.endswith(".mp4") and done.videos[0].duration == "5"
    assert running.sim.state.packs["video"].remaining == Decimal("998.5")


def test_failed_task_costs_nothing(running: Running) -> None:
    running.sim.state.fail_next(1)
    with running.client() as client:
        task = client.text_to_video("x", model_name="kling-v1", duration="10", mode="pro")
        running.advance(10)
        done = client.get_task("text2video", task.task_id)
    assert done.failed and done.task_status_msg
    assert done.final_unit_deduction == Decimal(0)
    assert done.charged == Decimal(0)
    assert running.sim.state.packs["video"].remaining == Decimal(1000)


def test_concurrency_limit_and_image_slots() -> None:
    for running in start(concurrency=2):
        with running.client(retry=RetryPolicy.off()) as client:
            client.generate_images("two cats", n=2)
            with pytest.raises(ConcurrencyLimited) as info:
                client.virtual_try_on("h.png", "c.png") and client.generate_images("one", n=1)
            assert info.value.code == 1303 and info.value.http_status == 429
            running.advance(10)
            done = client.generate_images("one more", n=1)
            assert done.task_status == "submitted"


def test_empty_pack_gives_insufficient_balance(running: Running) -> None:
    running.sim.state.set_remaining("tryon", Decimal(0))
    with running.client() as client, pytest.raises(InsufficientBalance) as info:
        client.virtual_try_on("human.png", "cloth.png")
    assert info.value.code == 1102


def test_create_without_external_id_is_never_retried(running: Running) -> None:
    seen: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [seen.append]})
    running.sim.state.inject(1302, times=1)
    with (
        http,
        KlingClient(AK, SK, base_url=running.url, http_client=http) as client,
        pytest.raises(RateLimited),
    ):
        client.text_to_video("hello")
    assert len(seen) == 1
    assert running.sim.state.tasks == {}


def test_create_with_external_id_retries_without_duplicates(running: Running) -> None:
    running.sim.state.inject(1302, times=1)
    running.sim.state.inject(1303, times=1)
    with running.client() as client:
        task = client.text_to_video("hello", external_task_id="job-1")
        assert task.external_task_id == "job-1"
        same = client.get_task("text2video", external_task_id="job-1")
    assert same.task_id == task.task_id
    assert len(running.sim.state.tasks) == 1


def test_retried_create_that_already_exists_returns_the_existing_task(running: Running) -> None:
    with running.client() as client:
        first = client.text_to_video("hello", external_task_id="job-2")
        with pytest.raises(InvalidRequest, match="already exists"):
            client.text_to_video("hello", external_task_id="job-2")
        running.sim.state.inject(5000, times=1)
        again = client.text_to_video("hello", external_task_id="job-2")
    assert again.task_id == first.task_id
    assert len(running.sim.state.tasks) == 1


def test_queries_retry_on_server_errors_and_give_up(running: Running) -> None:
    with running.client(retry=RetryPolicy(attempts=3, base_delay=0)) as client:
        task = client.text_to_video("hello")
        running.sim.state.inject(5000, times=2, scope="query")
        assert client.get_task("text2video", task.task_id).task_id == task.task_id
        running.sim.state.inject(5001, times=3, scope="query")
        with pytest.raises(ServerError) as info:
            client.list_tasks("text2video")
    assert info.value.code == 5001 and info.value.http_status == 503


def test_wait_times_out_with_the_task_id(running: Running) -> None:
    with running.client() as client:
        task = client.text_to_video("slow")
        with pytest.raises(TaskTimeout) as info:
            client.wait(task, timeout=0.15, poll=0.03)
    assert info.value.task_id == task.task_id
    assert info.value.last_status == "submitted"


def test_wait_returns_the_finished_task() -> None:
    for running in start(task_seconds=0):
        with running.client() as client:
            task = client.generate_images("cat", n=3, model_name="kling-v1-5")
            done = client.wait(task.task_id, endpoint="image", poll=0.01)
    assert done.succeeded
    assert [i.index for i in done.images] == [0, 1, 2]
    assert done.final_unit_deduction == Decimal(12)


def test_list_tasks_pages_newest_first(running: Running) -> None:
    with running.client() as client:
        ids = []
        for n in range(3):
            ids.append(client.text_to_video(f"p{n}").task_id)
            running.advance(0.001)
        first = client.list_tasks("text2video", page=1, page_size=2)
        second = client.list_tasks("text2video", page=2, page_size=2)
    assert [t.task_id for t in first + second] == ids[::-1]
    assert all(t.endpoint == "text2video" for t in first)


def test_account_costs_report_the_packs(running: Running) -> None:
    with running.client() as client:
        task = client.virtual_try_on("h.png", "c.png", model_name="kolors-virtual-try-on-v1-5")
        running.advance(10)
        assert client.get_task("tryon", task.task_id).final_unit_deduction == Decimal(1)
        costs = client.account_costs()
        only = client.account_costs(resource_pack_name="tryon pack")
    packs = {p.resource_pack_name: p for p in costs.resource_pack_subscribe_infos}
    assert packs["tryon pack"].remaining_quantity == Decimal(99)
    assert packs["tryon pack"].total_quantity == Decimal(100)
    assert packs["video pack"].status == "online"
    assert [p.resource_pack_name for p in only.resource_pack_subscribe_infos] == ["tryon pack"]


def test_signed_callbacks_on_every_status_change() -> None:
    receiver = Receiver()
    with serve(receiver.app()) as hook_url:
        for running in start(callback_secret="whsec_c2VjcmV0LWtleQ=="):
            with running.client() as client:
                task = client.text_to_video("cb", callback_url=f"{hook_url}/hook", model_name="kling-v2-6")
                running.advance(10)
                calls = receiver.wait_for(3)
    statuses = [parse_callback(body).task_status for _, body in calls]
    assert statuses == ["submitted", "processing", "succeed"]
    for headers, body in calls:
        verify_webhook("whsec_c2VjcmV0LWtleQ==", headers, body)
        assert parse_callback(body).task_id == task.task_id
    assert parse_callback(calls[-1][1]).final_unit_deduction == Decimal("1.5")
    with pytest.raises(Exception, match="signature"):
        verify_webhook("whsec_b3RoZXI=", calls[0][0], calls[0][1])


def test_api_key_mode_and_env_credentials(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    with KlingClient(api_key="test-api-key", base_url=running.url) as client:
        assert client.text_to_video("key").task_status == "submitted"
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    with KlingClient(base_url=running.url) as client:
        assert len(client.list_tasks("text2video")) == 1


@pytest.mark.anyio
async def test_async_client_has_the_same_calls(running: Running) -> None:
    async with AsyncKlingClient(AK, SK, base_url=running.url, retry=RetryPolicy(base_delay=0)) as client:
        task = await client.effects("hug", {"images": ["a.png", "b.png"]}, mode="pro", duration="5")
        running.sim.state.inject(1302, times=1, scope="query")
        running.advance(10)
        done = await client.wait(task, poll=0.01, timeout=5)
        assert done.final_unit_deduction == Decimal("3.5")
        assert [t.task_id for t in await client.list_tasks("effects")] == [task.task_id]
        costs = await client.account_costs()
        assert costs.resource_pack_subscribe_infos[0].remaining_quantity == Decimal("996.5")
        with pytest.raises(TaskTimeout):
            await client.wait(await client.text_to_video("slow"), timeout=0.05, poll=0.01)


def test_a_closed_client_sends_nothing_and_says_so(running: Running) -> None:
    """Both twins: after close, a ClientClosed (our error root, still a RuntimeError as httpx's
    was) before anything is sent; a client over an http_client its owner closed is closed too."""
    client = running.client()
    client.text_to_video("first", model_name="kling-v1")
    client.close()
    assert client.closed
    with pytest.raises(ClientClosed, match="nothing was sent"):
        client.text_to_video("second", model_name="kling-v1")
    with httpx.Client() as http:
        borrowed = running.client(http_client=http)
    assert borrowed.closed
    with pytest.raises(ClientClosed):
        borrowed.get_task("text2video", "t1")

    async def main() -> None:
        async with AsyncKlingClient(AK, SK, base_url=running.url, retry=RetryPolicy(base_delay=0)) as aclient:
            await aclient.text_to_video("third", model_name="kling-v1")
        assert aclient.closed
        with pytest.raises(ClientClosed):
            await aclient.text_to_video("fourth", model_name="kling-v1")

    anyio.run(main)
    assert len(running.sim.state.tasks) == 2
