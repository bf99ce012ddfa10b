"""The simulator's new standard beside the legacy one: keys, visibility, concurrency per model
version, cursor listings, the bill it keeps, motion control, two-step lip-sync."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_cost.kling import JWTAuth
from kling_cost.simulator import ManualClock, SimulatorState, create_app
from tests.servers import AK, API_KEY, SK, serve

T2V = "/text-to-video/kling-3.0"
LEGACY_T2V = "/v1/videos/text2video"
MOTION = {
    "contents": [
        {"type": "image", "url": "https://e.com/c.png"},
        {"type": "video", "url": "https://e.com/m.mp4"},
    ],
    "settings": {"character_orientation": "video", "resolution": "1080p"},
}


@dataclass
class Site:
    http: httpx.Client
    state: SimulatorState
    clock: ManualClock
    jwt: dict[str, str]

    def new(self, path: str = T2V, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        answer = self.http.post(path, json=body or {"prompt": "a fox"}, headers=headers or None)
        return answer.json() | {"http": answer.status_code}  # type: ignore[no-any-return]

    def legacy(self, body: dict[str, Any], path: str = LEGACY_T2V) -> dict[str, Any]:
        answer = self.http.post(path, json=body, headers=self.jwt)
        return answer.json() | {"http": answer.status_code}  # type: ignore[no-any-return]

    def finish(self, seconds: float = 10) -> None:
        self.clock.advance(seconds)
        self.state.refresh()


def site_with(**settings: Any) -> Iterator[Site]:
    clock = ManualClock()
    settings = {"task_seconds": 10, "failure_rate": 0, "concurrency": 2} | settings
    app = create_app(AK, SK, api_key=API_KEY, clock=clock, **settings)
    with (
        serve(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as http,
    ):
        yield Site(http, app.state.simulator.state, clock, {"Authorization": JWTAuth(AK, SK).authorization()})


@pytest.fixture
def site() -> Iterator[Site]:
    yield from site_with()


@pytest.fixture
def roomy() -> Iterator[Site]:
    yield from site_with(concurrency=10)


def code(answer: dict[str, Any]) -> tuple[int, int]:
    return answer["http"], answer["code"]


def test_new_paths_take_the_api_key_only_and_legacy_paths_take_both(site: Site) -> None:
    assert code(site.new(Authorization=site.jwt["Authorization"])) == (401, 1000)
    assert code(site.new(Authorization="Bearer not-a-key")) == (401, 1002)
    assert code(site.new(Authorization="")) == (401, 1001)
    for path in ("/tasks?task_ids=1", "/account/billing/package"):
        method = site.http.get if path.startswith("/tasks") else site.http.post
        assert method(path, headers=site.jwt).json()["code"] == 1000
    assert code(site.legacy({"prompt": "a fox"})) == (200, 0)
    api_key = site.http.post(LEGACY_T2V, json={"prompt": "another fox"}).json()
    assert api_key["code"] == 0
    assert code(site.new()) == (200, 0)


def test_task_queries_need_exactly_one_list_of_ids(site: Site) -> None:
    made = site.new(body={"prompt": "a fox", "options": {"external_task_id": "x-1"}})["data"]
    for params in ({}, {"task_ids": made["id"], "external_task_ids": "x-1"}, {"task_ids": " , "}):
        answer = site.http.get("/tasks", params=params)
        assert (answer.status_code, answer.json()["code"]) == (400, 1201), params
    both = site.http.get("/tasks", params={"task_ids": f"{made['id']},nope"}).json()["data"]
    assert [t["id"] for t in both] == [made["id"]]  # unknown ids are left out
    assert site.http.get("/tasks", params={"external_task_ids": "x-1"}).json()["data"][0]["id"] == made["id"]


def test_unknown_models_and_refused_bodies(site: Site) -> None:
    assert code(site.new("/omni-video/kling-3.0")) == (404, 1203)
    assert code(site.new("/text-to-video/kling-9")) == (404, 1203)
    refused = site.new(body={"prompt": "p", "settings": {"duration": "10"}})
    assert code(refused) == (400, 1201) and "JSON integer" in refused["message"]
    assert code(
        site.new(body={"prompt": "p", "settings": {"resolution": "4k"}}, path="/text-to-video/kling-2.6")
    ) == (
        400,
        1201,
    )
    assert code(site.new(path="/motion-control/kling-3.0", body={"contents": MOTION["contents"]})) == (
        400,
        1201,
    )
    assert site.state.tasks == {}


def test_each_task_is_seen_on_the_standard_that_made_it(site: Site) -> None:
    new = site.new(body={"prompt": "new", "options": {"external_task_id": "new-1"}})["data"]
    old = site.legacy({"prompt": "old", "external_task_id": "old-1"})["data"]
    site.finish()
    assert site.http.get(f"{LEGACY_T2V}/{new['id']}", headers=site.jwt).json()["code"] == 1203
    assert site.http.get(f"{LEGACY_T2V}/new-1", headers=site.jwt).json()["code"] == 1203
    legacy_list = site.http.get(LEGACY_T2V, headers=site.jwt).json()["data"]
    assert [t["task_id"] for t in legacy_list] == [old["task_id"]]
    assert site.http.get("/tasks", params={"task_ids": old["task_id"]}).json()["data"] == []
    assert [t["id"] for t in site.http.post("/tasks", json={}).json()["data"]["result"]] == [new["id"]]
    # external_task_id is unique per account, across both standards
    assert code(site.legacy({"prompt": "again", "external_task_id": "new-1"})) == (400, 1201)
    again = site.new(body={"prompt": "again", "options": {"external_task_id": "old-1"}})
    assert code(again) == (400, 1201) and "already exists" in again["message"]


def test_concurrency_is_per_model_version_and_pack_type() -> None:
    for site in site_with(concurrency=2):
        assert code(site.new()) == (200, 0)
        assert code(site.legacy({"prompt": "same version", "model_name": "kling-v3"})) == (200, 0)
        third = site.new()
        assert code(third) == (429, 1303) and "kling-3.0" in third["message"]
        assert code(site.new("/text-to-video/kling-2.6")) == (200, 0)  # another model version
        assert code(site.legacy({"prompt": "v1", "model_name": "kling-v1"})) == (200, 0)
        site.finish()
        assert code(site.new()) == (200, 0)


def test_cursor_listing_filters_windows_and_limits(roomy: Site) -> None:
    site = roomy
    ids = []
    for i in range(5):
        if i == 3:
            site.state.fail_next(1)
        ids.append(site.new(body={"prompt": f"p{i}"})["data"]["id"])
        site.clock.advance(1)
    site.finish()
    listing = site.http.post("/tasks", json={"limit": 2})
    pages: list[list[str]] = []
    body = listing.json()["data"]
    while True:
        pages.append([t["id"] for t in body["result"]])
        if not body["has_more"]:
            break
        # the cursor overrides everything else in the body, a limit and filters included
        body = site.http.post(
            "/tasks", json={"cursor": body["next_cursor"], "limit": 500, "filters": []}
        ).json()["data"]
    newest_first = list(reversed(ids))
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    failed = {"filters": [{"key": "status", "values": ["failed"]}]}
    assert [t["id"] for t in site.http.post("/tasks", json=failed).json()["data"]["result"]] == [ids[3]]
    images = {"filters": [{"key": "product_type", "values": ["image"]}]}
    assert site.http.post("/tasks", json=images).json()["data"] == {
        "result": [],
        "count": 0,
        "next_cursor": None,
        "has_more": False,
    }
    first = site.state.tasks[ids[1]].created_at
    window = {"start_time": str(first), "end_time": first + 1000}
    assert [t["id"] for t in site.http.post("/tasks", json=window).json()["data"]["result"]] == [
        ids[2],
        ids[1],
    ]
    assert site.http.post("/tasks").json()["data"]["count"] == 5  # no body: every default
    for bad in (
        {"limit": 501},
        {"limit": 0},
        {"cursor": "bm9wZQ=="},
        {"start_time": "yesterday"},
        {"start_time": 2, "end_time": 1},
        {"filters": [{"key": "colour", "values": ["red"]}]},
        {"filters": {"status": "failed"}},
    ):
        answer = site.http.post("/tasks", json=bad)
        assert (answer.status_code, answer.json()["code"]) == (400, 1201), bad


def test_the_bill_is_what_was_charged(site: Site) -> None:
    """A kling-3.0 1080p 10 s video costs 8 units on either standard, and the bill says so."""
    site.new(body={"prompt": "new", "settings": {"resolution": "1080p", "duration": 10}})
    site.legacy({"prompt": "old", "model_name": "kling-v3", "mode": "pro", "duration": "10"})
    site.state.fail_next(1)
    site.new("/text-to-video/kling-2.6", {"prompt": "fails"})
    site.http.post("/v1/images/generations", json={"prompt": "cats", "n": 2}, headers=site.jwt)
    site.finish()
    rows = site.http.post("/account/billing/package", json={}).json()["data"]["result"]
    assert [(r["product_type"], r["deduction_amount"]) for r in rows] == [
        ("image", "2"),
        ("video", "8"),
        ("video", "8"),
    ]
    assert {r["model_name"] for r in rows if r["product_type"] == "video"} == {"kling-3.0", "kling-v3"}
    assert {r["api_key_name"] for r in rows} == {"default", AK}
    assert site.state.packs["video"].remaining == 1000 - 16
    pack_id = site.state.packs["video"].pack_id
    for query in ({"package_id": pack_id}, {"filters": [{"key": "product_type", "values": ["video"]}]}):
        found = site.http.post("/account/billing/package", json=query).json()["data"]["result"]
        assert [r["deduction_amount"] for r in found] == ["8", "8"], query
    assert site.http.post("/account/billing/balance", json={}).json()["data"]["result"] == []
    assert site.http.post("/account/billing/package", json={"package_id": 5}).json()["code"] == 1201


def test_the_balance_pays_when_the_pack_cannot_and_then_runs_out() -> None:
    for site in site_with(balance="1.12", video_units=4):
        assert code(site.new(body={"prompt": "p", "settings": {"resolution": "1080p", "duration": 10}})) == (
            200,
            0,
        )
        refused = site.new(body={"prompt": "p", "settings": {"duration": 10}})  # 6 units: 4 in the pack,
        # and the balance is held by the first task
        assert code(refused) == (429, 1102)
        assert code(site.new("/text-to-video/kling-2.6", {"prompt": "p", "settings": {"duration": 10}})) == (
            200,
            0,
        )
        site.finish()
        assert site.state.accounts.balance is not None and site.state.accounts.balance.amount == 0
        assert site.state.packs["video"].remaining == 1
        rows = site.http.post("/account/billing/balance", json={}).json()["data"]["result"]
        assert [(r["deduction_amount"], r["list_price"], r["balance_after_deduction"]) for r in rows] == [
            ("1.12", "1.12", "0")
        ]


def test_motion_control_is_held_at_its_longest_and_billed_on_its_output() -> None:
    for site in site_with(video_units=20, motion_seconds="10.04"):
        held = site.new("/motion-control/kling-2.6", MOTION)
        assert code(held) == (429, 1102)  # 0.8 x 30 s = 24 units held, the pack has 20
        site.state.set_remaining("video", Decimal(24))
        made = site.new("/motion-control/kling-2.6", MOTION)["data"]
        site.finish()
        [task] = site.http.get("/tasks", params={"task_ids": made["id"]}).json()["data"]
        assert task["outputs"][0]["duration"] == "10.04"
        assert task["billing"] == [{"charge_type": "unit", "amount": "8", "package_type": "video"}]
        assert site.state.packs["video"].remaining == 16


def test_lip_sync_in_two_steps(site: Site) -> None:
    video = site.legacy({"prompt": "talking", "duration": "10"})["data"]["task_id"]
    site.finish()
    video_id = site.state.tasks[video].result["videos"][0]["id"]  # type: ignore[index]
    face = site.http.post("/v1/videos/identify-face", json={"video_id": video_id}, headers=site.jwt).json()[
        "data"
    ]
    assert face["face_data"][0]["end_time"] == 10_000
    choose = {"face_id": "0", "audio_id": "a-1", "sound_start_time": 0, "sound_end_time": 3000}
    made = site.legacy(
        {"session_id": face["session_id"], "face_choose": [choose]}, "/v1/videos/advanced-lip-sync"
    )
    site.finish()
    done = site.http.get(f"/v1/videos/advanced-lip-sync/{made['data']['task_id']}", headers=site.jwt).json()
    assert done["data"]["final_unit_deduction"] == "1"  # 10 s: two started 5 s blocks
    for body, words in (
        ({"session_id": "nope", "face_choose": [choose]}, "not a face session"),
        ({"session_id": face["session_id"], "face_choose": [dict(choose, face_id="7")]}, "is not a face"),
        ({"session_id": face["session_id"], "face_choose": [{"face_id": "0"}]}, "exactly one of"),
        ({"session_id": face["session_id"], "face_choose": [dict(choose, sound_end_time=0)]}, "after"),
        ({"session_id": face["session_id"], "face_choose": []}, "non-empty"),
        ({"face_choose": [choose]}, "session_id is required"),
    ):
        refused = site.legacy(body, "/v1/videos/advanced-lip-sync")
        assert code(refused) == (400, 1201) and words in refused["message"], body
    assert site.http.post("/v1/videos/identify-face", json={"video_id": "nope"}).json()["code"] == 1201
    assert site.http.post("/v1/videos/identify-face", json={}).json()["code"] == 1201
