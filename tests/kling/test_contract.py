"""One set of documents (tests/fixtures/kling/, KLING_API.md's shapes) run through the client's
models and through the simulator: both must agree with them, field for field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_cost.kling import CREATE_PATHS, JWTAuth, KlingResponse, KlingTask, validate_create
from kling_cost.kling.models import (
    AccountCosts,
    EffectsRequest,
    ImageGenerationRequest,
    ImageToVideoRequest,
    KlingRequest,
    LipSyncRequest,
    MultiImageToVideoRequest,
    TextToVideoRequest,
    VirtualTryOnRequest,
)
from kling_cost.pricing import load_catalog
from tests.kling.conftest import Running, start
from tests.servers import AK, SK

FIXTURES = Path(__file__).parent.parent / "fixtures" / "kling"
TASK_DOCS = sorted(p for p in FIXTURES.glob("*.json") if p.stem != "account_costs")
REQUEST_MODELS: dict[str, type[KlingRequest]] = {
    "text2video": TextToVideoRequest,
    "image2video": ImageToVideoRequest,
    "multi-image2video": MultiImageToVideoRequest,
    "lip-sync": LipSyncRequest,
    "effects": EffectsRequest,
    "image": ImageGenerationRequest,
    "tryon": VirtualTryOnRequest,
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(), parse_float=Decimal)  # type: ignore[no-any-return]


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


@pytest.fixture(scope="module")
def sim() -> Iterator[Running]:
    yield from start(task_seconds=1)


@pytest.fixture(scope="module")
def http(sim: Running) -> Iterator[httpx.Client]:
    auth = JWTAuth(AK, SK)
    with httpx.Client(base_url=sim.url, headers={"Authorization": auth.authorization()}) as client:
        yield client


@pytest.mark.parametrize("path", TASK_DOCS, ids=lambda p: p.stem)
def test_client_models_speak_the_documents(path: Path) -> None:
    doc = load(path)
    endpoint, request = doc["endpoint"], doc["request"]
    model = REQUEST_MODELS[endpoint].model_validate(request)
    assert json.loads(json.dumps(model.to_body())) == json.loads(path.read_text())["request"]
    validate_create(endpoint, request, load_catalog("kling-api"))
    for name in ("create_response", "query_response"):
        envelope = KlingResponse.model_validate(doc[name])
        task = KlingTask.model_validate(envelope.data)
        assert task.external_task_id == request["external_task_id"]
    final = KlingTask.model_validate(doc["query_response"]["data"])
    assert final.succeeded and final.final_unit_deduction == Decimal(
        doc["query_response"]["data"]["final_unit_deduction"]
    )


@pytest.mark.parametrize("path", TASK_DOCS, ids=lambda p: p.stem)
def test_simulator_answers_in_the_documented_shape(path: Path, sim: Running, http: httpx.Client) -> None:
    doc = load(path)
    endpoint = doc["endpoint"]
    url = CREATE_PATHS[endpoint]
    created = http.post(url, content=json.dumps(doc["request"], default=str))
    assert created.status_code == 200, created.text
    assert shape(created.json()) == shape(doc["create_response"])
    sim.advance(1)
    ext = doc["request"]["external_task_id"]
    queried = http.get(f"{url}/{ext}").json()
    assert shape(queried) == shape(doc["query_response"])
    expected = KlingTask.model_validate(doc["query_response"]["data"])
    actual = KlingTask.model_validate(json.loads(json.dumps(queried["data"])))
    assert actual.final_unit_deduction == expected.final_unit_deduction
    assert len(actual.videos) == len(expected.videos) and len(actual.images) == len(expected.images)
    assert [v.duration for v in actual.videos] == [v.duration for v in expected.videos]


def test_account_costs_document(sim: Running, http: httpx.Client) -> None:
    doc = load(FIXTURES / "account_costs.json")
    parsed = AccountCosts.model_validate(KlingResponse.model_validate(doc["response"]).data)
    assert parsed.resource_pack_subscribe_infos[0].remaining_quantity == Decimal("996.5")
    now = int(sim.clock.now() * 1000)
    window = {"start_time": now - 86_400_000, "end_time": now}
    assert window.keys() == doc["request"].keys()
    answer = http.get("/account/costs", params=window | {"resource_pack_name": "video pack"})
    body = json.loads(answer.content, parse_float=Decimal)
    assert shape(body) == shape(doc["response"])
    AccountCosts.model_validate(body["data"])
