"""End to end: the client against ``kling-cost simulate`` running as a separate process on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_cost.errors import (
    AccountError,
    AuthError,
    ConcurrencyLimited,
    ContentRejected,
    InsufficientBalance,
    InvalidRequest,
    KlingAPIError,
    PermissionDenied,
    RateLimited,
    ServerError,
)
from kling_cost.kling import JWTAuth, KlingClient, KlingTask, RetryPolicy
from kling_cost.simulator import ManualClock, create_app
from tests.servers import AK, API_KEY, SK, free_port, serve

pytestmark = pytest.mark.slow
TASK_SECONDS = 0.3


class Remote:
    def __init__(self, url: str) -> None:
        self.url = url

    def client(self, **kwargs: Any) -> KlingClient:
        kwargs.setdefault("retry", RetryPolicy(base_delay=0))
        return KlingClient(AK, SK, base_url=self.url, **kwargs)

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=self.url, headers=headers) as http:
            response = http.post(path, json=body) if body is not None else http.get(path)
        response.raise_for_status()
        return response.json()["data"]

    def tasks_with(self, external_task_id: str) -> list[dict[str, Any]]:
        tasks = self.admin("/_simulator/state")["tasks"]
        return [t for t in tasks if t["task_info"].get("external_task_id") == external_task_id]


@pytest.fixture(scope="session")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    args = [
        sys.executable, "-m", "kling_cost", "simulate", "--host", "127.0.0.1", "--port", str(port),
        "--access-key", AK, "--secret-key", SK, "--api-key", API_KEY,
        "--task-seconds", str(TASK_SECONDS), "--failure-rate", "0", "--seed", "7",
        "--video-units", "1000", "--image-units", "1000", "--tryon-units", "100", "--concurrency", "3",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {log.read_text()}")
            try:
                with httpx.Client() as http:
                    if http.get(url + "/account/costs").status_code == 401:
                        break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield Remote(url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finish(client: KlingClient, task: KlingTask) -> KlingTask:
    done = client.wait(task, timeout=10, poll=0.05, max_poll=0.2)
    assert done.succeeded, done
    return done


def test_every_endpoint_polls_to_completion(remote: Remote) -> None:
    with remote.client() as client:
        video = finish(client, client.text_to_video("a fox", model_name="kling-v1-6", mode="pro", duration=5))
        assert video.final_unit_deduction == Decimal("3.5")
        i2v = client.image_to_video("https://img.example/a.png", "zoom", model_name="kling-v1-6")
        multi = client.multi_image_to_video(["a.png", "b.png"], "morph", model_name="kling-v1-6")
        video_id = video.videos[0].id
        extend = client.extend_video(video_id, "longer")
        results = [finish(client, t) for t in (i2v, multi, extend)]
        assert [r.final_unit_deduction for r in results] == [Decimal(2), Decimal(2), Decimal("3.5")]
        assert results[2].videos[0].duration == "10"
        lip = client.lip_sync(video_id=video_id, mode="text2video", text="hello there")
        fx = client.effects("bloombloom", {"image": "a.png"}, mode="std")
        img = client.generate_images("a bowl", model_name="kling-v1-5", n=2, image="ref.png")
        tryon = client.virtual_try_on("h.png", "c.png")
        ends = [finish(client, t) for t in (lip, fx, img, tryon)]
        assert [e.final_unit_deduction for e in ends] == [Decimal("0.5"), Decimal(2), Decimal(16), Decimal(1)]
        assert len(ends[2].images) == 2 and ends[3].images[0].url.startswith("https://")
        assert client.get_task("lip-sync", lip.task_id).succeeded
        assert [t.task_id for t in client.list_tasks("effects")] == [fx.task_id]
        packs = {p.resource_pack_name: p for p in client.account_costs().resource_pack_subscribe_infos}
        assert packs["image pack"].remaining_quantity == Decimal(984)


def test_every_error_family(remote: Remote) -> None:
    families: list[tuple[int, type[KlingAPIError]]] = [
        (1101, AccountError),
        (1103, PermissionDenied),
        (1301, ContentRejected),
        (1302, RateLimited),
        (1303, ConcurrencyLimited),
        (5000, ServerError),
    ]
    with remote.client(retry=RetryPolicy.off()) as client:
        for code, family in families:
            remote.admin("/_simulator/faults", {"code": code, "times": 1})
            with pytest.raises(family) as info:
                client.text_to_video("fault")
            assert info.value.code == code and info.value.request_id
        unchecked = remote.client(validate=False)
        with unchecked, pytest.raises(InvalidRequest) as bad:
            unchecked.create("text2video", {"prompt": "x", "model_name": "kling-v9"})
        assert bad.value.code == 1201 and "kling-v9" in bad.value.message
        with pytest.raises(InvalidRequest) as missing:
            client.get_task("text2video", "does-not-exist")
        assert missing.value.code == 1203 and missing.value.http_status == 404
        remote.admin("/_simulator/packs/tryon", {"remaining": "0"})
        try:
            with pytest.raises(InsufficientBalance):
                client.virtual_try_on("h.png", "c.png")
        finally:
            remote.admin("/_simulator/packs/tryon", {"remaining": "90"})
    with KlingClient(AK, "x" * 40, base_url=remote.url) as wrong, pytest.raises(AuthError) as auth:
        wrong.list_tasks("text2video")
    assert auth.value.code == 1002 and auth.value.http_status == 401


def test_expired_and_future_tokens_are_refused(remote: Remote) -> None:
    expired = JWTAuth(AK, SK, clock=lambda: time.time() - 3600)
    future = JWTAuth(AK, SK, clock=lambda: time.time() + 3600)
    for auth, code in ((expired, 1004), (future, 1003)):
        with KlingClient(base_url=remote.url, auth=auth) as client, pytest.raises(AuthError) as info:
            client.list_tasks("image")
        assert info.value.code == code


def test_token_is_renewed_before_it_expires() -> None:
    """The client signs a new token ``refresh_margin`` seconds before the old one expires, and
    Kling refuses the old one once it has. Time is moved, not waited for: the client and Kling
    (in process here, as only it can share the test's clock) read one clock the test moves."""
    clock = ManualClock(start=1_800_000_000)
    auth = JWTAuth(AK, SK, ttl=2, refresh_margin=1, clock=clock.now)
    app = create_app(AK, SK, clock=clock, auth_clock=clock.now)
    with serve(app) as url, KlingClient(base_url=url, auth=auth) as client, httpx.Client() as http:

        def answer(token: str) -> int:
            response = http.get(url + "/v1/videos/text2video", headers={"Authorization": f"Bearer {token}"})
            return int(response.json()["code"])

        client.list_tasks("text2video")
        first = auth.token()
        clock.advance(0.5)
        client.list_tasks("text2video")
        assert auth.token() == first  # more than refresh_margin before it expires: reused
        clock.advance(0.5)  # refresh_margin before it expires
        client.list_tasks("text2video")
        renewed = auth.token()
        assert renewed != first
        assert answer(first) == 0  # renewed while the old one was still good
        clock.advance(1)  # the first token's exp
        assert answer(first) == 1004
        assert answer(renewed) == 0
    with KlingClient(AK, SK, token_ttl=2, token_refresh_margin=1) as configured:  # the same, from settings
        assert isinstance(configured.auth, JWTAuth)
        assert (configured.auth.ttl, configured.auth.refresh_margin) == (2, 1)


def test_retries_on_1302_and_1303_make_no_duplicate_task(remote: Remote) -> None:
    with remote.client(retry=RetryPolicy(attempts=5, base_delay=0)) as client:
        remote.admin("/_simulator/faults", {"code": 1302, "times": 2})
        task = client.text_to_video("retry me", external_task_id="e2e-retry-1302")
        assert len(remote.tasks_with("e2e-retry-1302")) == 1
        finish(client, task)
    # a real 1303: fill the try-on pack's 3 slots, then a keyed create waits for one to free up
    with remote.client(retry=RetryPolicy.off()) as strict:
        running = [strict.virtual_try_on("h.png", "c.png") for _ in range(3)]
        with pytest.raises(ConcurrencyLimited):
            strict.virtual_try_on("h.png", "c.png")
    patient = RetryPolicy(attempts=8, base_delay=TASK_SECONDS / 3, multiplier=1.5, jitter=0)
    with remote.client(retry=patient) as client:
        task = client.virtual_try_on("h.png", "c.png", external_task_id="e2e-retry-1303")
        assert len(remote.tasks_with("e2e-retry-1303")) == 1
        for t in [*running, task]:
            finish(client, t)
