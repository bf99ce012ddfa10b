"""The simulator at the HTTP level: Kling's codes for bad bodies, auth, limits, determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_cost.kling import JWTAuth
from kling_cost.simulator import ManualClock, SimulatorState, create_app
from tests.servers import AK, API_KEY, SK, serve

T2V = "/v1/videos/text2video"


@pytest.fixture
def site() -> Iterator[tuple[httpx.Client, SimulatorState, ManualClock]]:
    clock = ManualClock()
    app = create_app(
        AK, SK, api_key=API_KEY, clock=clock, task_seconds=5, failure_rate=0,
        rate_limit=3, blocked_terms=("forbidden",), concurrency=50,
    )  # fmt: skip
    with (
        serve(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as http,
    ):
        yield http, app.state.simulator.state, clock


def answer(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    assert set(body) == {"code", "message", "request_id", "data"}
    return response.status_code, body["code"], body["message"]


@pytest.mark.parametrize(
    ("path", "body", "code", "words"),
    [
        (T2V, {"prompt": "cat", "model_name": "kling-v9"}, 1201, "model 'kling-v9' is not a Kling model"),
        (T2V, {"prompt": "cat", "duration": "7"}, 1201, "duration 7 is not offered"),
        (T2V, {"prompt": "x" * 2501}, 1201, "at most 2500"),
        (T2V, {"prompt": ""}, 1201, "prompt must not be empty"),
        ("/v1/videos/image2video", {"prompt": "cat"}, 1201, "image or image_tail is required"),
        ("/v1/videos/video-extend", {"video_id": "nope"}, 1201, "not a video of this account"),
        ("/v1/images/kolors-virtual-try-on", {"human_image": "h"}, 1201, "cloth_image is required"),
        ("/v1/images/generations", {"prompt": "p", "n": 10}, 1201, "n 10 is not offered"),
        (T2V, [1, 2], 1200, "JSON object"),
    ],
)
def test_invalid_bodies_get_klings_codes(
    site: tuple[httpx.Client, SimulatorState, ManualClock], path: str, body: Any, code: int, words: str
) -> None:
    http, state, _ = site
    status, got, message = answer(http.post(path, json=body))
    assert (status, got) == (400, code) and words in message
    assert state.tasks == {}


def test_not_json_unknown_route_and_unknown_task(
    site: tuple[httpx.Client, SimulatorState, ManualClock],
) -> None:
    http, _, _ = site
    assert answer(http.post(T2V, content=b"{nope"))[:2] == (400, 1200)
    assert answer(http.get("/v1/videos/nothing"))[:2] == (404, 1202)
    assert answer(http.get(T2V + "/123"))[:2] == (404, 1203)
    assert answer(http.get(T2V, params={"pageSize": 501}))[:2] == (400, 1201)


def test_auth_codes() -> None:
    app = create_app(AK, SK, task_seconds=1)
    with serve(app) as url, httpx.Client(base_url=url) as http:
        assert answer(http.get(T2V))[:2] == (401, 1001)
        assert answer(http.get(T2V, headers={"Authorization": "Bearer not-a-jwt"}))[:2] == (401, 1002)
        other = JWTAuth("someone-else", SK).authorization()
        assert answer(http.get(T2V, headers={"Authorization": other}))[:2] == (401, 1002)
        good = JWTAuth(AK, SK).authorization()
        assert answer(http.get(T2V, headers={"Authorization": good}))[:2] == (200, 0)


def test_rate_limit_content_safety_and_duplicates(
    site: tuple[httpx.Client, SimulatorState, ManualClock],
) -> None:
    http, _, clock = site
    assert answer(http.post(T2V, json={"prompt": "a forbidden thing"}))[:2] == (400, 1301)
    clock.advance(1)
    body = {"prompt": "cat", "external_task_id": "dup"}
    assert answer(http.post(T2V, json=body))[1] == 0
    status, code, message = answer(http.post(T2V, json=body))
    assert (status, code) == (400, 1201) and "already exists" in message
    assert answer(http.post(T2V, json={"prompt": "third"}))[1] == 0
    assert answer(http.post(T2V, json={"prompt": "fourth"}))[:2] == (429, 1302)
    clock.advance(1)
    assert answer(http.post(T2V, json={"prompt": "after a second"}))[1] == 0


def test_expired_pack_and_exact_quantities(site: tuple[httpx.Client, SimulatorState, ManualClock]) -> None:
    http, state, clock = site
    http.post(
        "/v1/videos/lip-sync", json={"input": {"video_url": "u", "mode": "audio2video", "audio_url": "a"}}
    )
    clock.advance(5)
    now = int(clock.now() * 1000)
    costs = http.get("/account/costs", params={"start_time": now - 1, "end_time": now})
    packs = json.loads(costs.content, parse_float=Decimal)["data"]["resource_pack_subscribe_infos"]
    assert packs[0]["remaining_quantity"] == Decimal("999.5")
    assert b'"remaining_quantity": 999.5' in costs.content
    state.expire_pack("image")
    assert answer(http.post("/v1/images/generations", json={"prompt": "p"}))[:2] == (429, 1102)


def run_failures(seed: int) -> list[str]:
    clock = ManualClock(start=1_800_000_000)
    state = SimulatorState(
        clock=clock, task_seconds=1, failure_rate=0.5, seed=seed, units={"video": Decimal(100)},
        concurrency=100, pack_days=365, rate_limit=None, blocked_terms=(), result_base_url="https://x",
        catalog="kling-api",
    )  # fmt: skip
    ids = [state.submit("text2video", {"prompt": f"p{i}"})["task_id"] for i in range(12)]
    clock.advance(1)
    state.refresh()
    return [state.tasks[i].status for i in ids]


def test_failures_are_seeded_and_deterministic() -> None:
    first = run_failures(3)
    assert first == run_failures(3)
    assert {"succeed", "failed"} == set(first)
    assert first != run_failures(4)
