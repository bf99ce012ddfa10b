"""The new standard's documented shapes (tests/fixtures/kling/new/, from KLING_API.md's
addendum), one test each: the simulator answers in exactly these shapes over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_cost.kling import JWTAuth
from kling_cost.simulator import ManualClock, Simulator, create_app, signature
from tests.servers import AK, API_KEY, SK, Receiver, serve

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kling" / "new"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)  # type: ignore[no-any-return]


def shape(value: Any) -> Any:
    """The structure of a document: keys and value types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    return type(value).__name__


@dataclass
class Site:
    http: httpx.Client
    sim: Simulator
    clock: ManualClock
    hooks: Receiver
    hook_url: str

    def finish(self) -> None:
        self.clock.advance(10)
        self.sim.state.refresh()

    def create(self, doc: dict[str, Any]) -> httpx.Response:
        answer = self.http.post(doc["path"], json=doc["request"])
        assert answer.status_code == 200, answer.text
        return answer

    def query(self, doc: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.get("/tasks", params=doc["query"])
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


@pytest.fixture
def site() -> Iterator[Site]:
    clock = ManualClock()
    hooks = Receiver()
    app = create_app(
        AK, SK, api_key=API_KEY, clock=clock, task_seconds=10, failure_rate=0, balance="100",
        balance_discount="0.2", tick=0.02,
    )  # fmt: skip
    with (
        serve(app) as url,
        serve(hooks.app()) as hook_base,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}) as http,
    ):
        yield Site(http, app.state.simulator, clock, hooks, hook_base + "/hook")


def test_create_answer(site: Site) -> None:
    doc = load("create.json")
    answer = site.create(doc).json()
    assert shape(answer) == shape(doc["response"])
    assert answer["data"]["status"] == "submitted"
    assert answer["data"]["external_id"] == doc["request"]["options"]["external_task_id"]


def test_tasks_array_with_outputs_and_unit_billing(site: Site) -> None:
    doc = load("tasks.json")
    site.create(doc)
    site.finish()
    answer = site.query(doc)
    assert shape(answer) == shape(doc["response"])
    [task] = answer["data"]
    assert task["status"] == "succeeded" and task["billing"] == doc["response"]["data"][0]["billing"]
    assert task["outputs"][0]["duration"] == "10" and task["outputs"][0]["watermark_url"]
    by_id = site.http.get("/tasks", params={"task_ids": task["id"]}).json()
    assert by_id["data"] == answer["data"]


def test_outputs_items(site: Site) -> None:
    doc, outputs = load("tasks.json"), load("outputs.json")
    site.create(doc)
    site.finish()
    [task] = site.query(doc)["data"]
    [video] = task["outputs"]
    assert shape(video) == shape(outputs["outputs"][0])
    assert shape(task["billing"][0]) == shape(outputs["billing"][0])


def test_failed_task_has_empty_billing(site: Site) -> None:
    doc = load("task_failed.json")
    site.sim.state.fail_next(1)
    site.create(doc)
    site.finish()
    answer = site.query(doc)
    assert shape(answer) == shape(doc["response"])
    [task] = answer["data"]
    assert (task["status"], task["billing"], task["outputs"]) == ("failed", [], [])
    assert task["message"]
    assert site.sim.state.packs["video"].remaining == 1000


def test_cash_billing_entry(site: Site) -> None:
    doc, outputs = load("billing_cash.json"), load("outputs.json")
    site.sim.state.set_remaining("video", Decimal(0))
    site.create(doc)
    site.finish()
    answer = site.query(doc)
    assert shape(answer) == shape(doc["response"])
    [task] = answer["data"]
    assert task["billing"] == doc["response"]["data"][0]["billing"]  # 6 units: USD 0.84 list, 20 % off
    assert shape(task["billing"][0]) == shape(outputs["billing"][1])


def test_cursor_listing(site: Site) -> None:
    doc, made = load("listing.json"), load("tasks.json")
    for key in ("first", "second"):
        body = json.loads(json.dumps(made["request"]))
        body["options"]["external_task_id"] = f"list-{key}"
        site.http.post(made["path"], json=body)
        site.clock.advance(1)
    site.finish()
    now = int(site.clock.now() * 1000)
    request = dict(doc["request"], start_time=str(now - 3_600_000), end_time=now)
    first = site.http.post("/tasks", json=request).json()
    assert shape(first) == shape(doc["response"])
    assert [t["external_id"] for t in first["data"]["result"]] == ["list-second"]
    second = site.http.post("/tasks", json={"cursor": first["data"]["next_cursor"], "limit": 500}).json()
    assert [t["external_id"] for t in second["data"]["result"]] == ["list-first"]
    assert (second["data"]["has_more"], second["data"]["next_cursor"], second["data"]["count"]) == (
        False,
        None,
        1,
    )


def test_billing_package_rows(site: Site) -> None:
    doc, made = load("billing_package.json"), load("tasks.json")
    site.create(made)
    site.finish()
    answer = site.http.post("/account/billing/package", json=doc["request"]).json()
    assert shape(answer) == shape(doc["response"])
    [row] = answer["data"]["result"]
    assert (row["model_name"], row["resolution"], row["duration"]) == ("kling-3.0", "1080p", "10")
    assert (row["unit_before_deduction"], row["deduction_amount"], row["unit_after_deduction"]) == (
        "1000",
        "8",
        "992",
    )
    assert row["package_id"] == site.sim.state.packs["video"].pack_id


def test_billing_balance_rows(site: Site) -> None:
    doc, made = load("billing_balance.json"), load("billing_cash.json")
    site.sim.state.set_remaining("video", Decimal(0))
    site.create(made)
    site.finish()
    answer = site.http.post("/account/billing/balance", json=doc["request"]).json()
    assert shape(answer) == shape(doc["response"])
    volatile = ("task_id", "deduction_time")  # ids and times differ; every other value is the document's
    rows = [{k: v for k, v in r.items() if k not in volatile} for r in answer["data"]["result"]]
    assert rows == [
        {k: v for k, v in r.items() if k not in volatile} for r in doc["response"]["data"]["result"]
    ]


def test_callback_posts_the_bare_task_object(site: Site) -> None:
    doc = load("callback.json")
    request = json.loads(json.dumps(doc["request"]))
    request["options"]["callback_url"] = site.hook_url
    site.http.post(doc["path"], json=request)
    site.finish()
    calls = site.hooks.wait_for(3)
    bodies = [json.loads(body) for _, body in calls]
    assert [b["status"] for b in bodies] == ["submitted", "processing", "succeeded"]
    assert shape(bodies[-1]) == shape(doc["body"])
    assert "code" not in bodies[-1] and "data" not in bodies[-1]
    assert bodies[-1]["billing"] == doc["body"]["billing"]


def test_the_docs_webhook_vector_signs_as_the_simulator_signs() -> None:
    vector = load("callback.json")["webhook_vector"]
    headers = vector["headers"]
    signed = signature(
        vector["secret"], headers["webhook-id"], int(headers["webhook-timestamp"]), vector["body"].encode()
    )
    assert signed == headers["webhook-signature"]


def test_two_step_lip_sync(site: Site) -> None:
    doc = load("lip_sync.json")
    identified = site.http.post("/v1/videos/identify-face", json=doc["identify_request"]).json()
    assert shape(identified) == shape(doc["identify_response"])
    body = dict(doc["create_request"], session_id=identified["data"]["session_id"])
    assert site.http.post("/v1/videos/advanced-lip-sync", json=body).json()["code"] == 0
    site.finish()
    answer = site.http.get("/v1/videos/advanced-lip-sync/contract-lip-sync-2").json()
    assert shape(answer) == shape(doc["query_response"])
    assert answer["data"]["final_unit_deduction"] == "0.5"  # a 5 s video: one started 5 s block


def test_legacy_answer_paid_from_the_balance(site: Site) -> None:
    doc = load("legacy_cash.json")
    site.sim.state.set_remaining("video", Decimal(0))
    jwt = {"Authorization": JWTAuth(AK, SK).authorization()}
    assert site.http.post("/v1/videos/text2video", json=doc["request"], headers=jwt).json()["code"] == 0
    site.finish()
    answer = site.http.get("/v1/videos/text2video/contract-legacy-cash", headers=jwt).json()
    assert shape(answer) == shape(doc["query_response"])
    data = answer["data"]
    assert (data["final_unit_deduction"], data["final_balance_deduction"]) == (
        "0",
        doc["query_response"]["data"]["final_balance_deduction"],
    )
