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

from kling_cost.kling import (
    CREATE_PATHS,
    AudioOutput,
    BalanceDeduction,
    CashCharge,
    CursorPage,
    ImageOutput,
    JWTAuth,
    KlingResponse,
    KlingTask,
    NewStandardRequest,
    NewStandardTask,
    PackageDeduction,
    UnitCharge,
    VideoOutput,
    parse_callback,
    validate_create,
    verify_webhook,
)
from kling_cost.kling.models import (
    AccountCosts,
    AdvancedLipSyncRequest,
    EffectsRequest,
    FaceIdentification,
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


# --------------------------------------------------------------------------- the new standard

NEW_FIXTURES = FIXTURES / "new"


def _new_task(data: Any) -> NewStandardTask:
    return NewStandardTask.model_validate(json.loads(json.dumps(data, default=str)))


def _check_new_request(doc: dict[str, Any]) -> None:
    request = json.loads(json.dumps(doc["request"], default=str))
    assert NewStandardRequest.model_validate(request).to_body() == request
    validate_create(doc["path"], request, load_catalog("kling-api"))


def _check_create(doc: dict[str, Any]) -> None:
    _check_new_request(doc)
    task = _new_task(KlingResponse.model_validate(doc["response"]).data)
    assert (task.status, task.done) == ("submitted", False)
    assert task.external_task_id == doc["request"]["options"]["external_task_id"]
    assert task.outputs == [] and task.billing == []


def _check_tasks(doc: dict[str, Any]) -> None:
    _check_new_request(doc)
    data = KlingResponse.model_validate(doc["response"]).data
    [task] = [_new_task(item) for item in data]
    [raw] = doc["response"]["data"]
    assert task.external_task_id == doc["request"]["options"]["external_task_id"]
    assert task.task_id == raw["id"] and task.done
    units = sum((Decimal(b["amount"]) for b in raw["billing"] if b["charge_type"] == "unit"), Decimal(0))
    assert task.units == units and isinstance(task.units, Decimal)
    if task.failed:
        assert task.billing == [] and task.outputs == [] and task.charged == 0
    else:
        assert task.succeeded and [v.duration for v in task.videos] == [o["duration"] for o in raw["outputs"]]
    for entry, given in zip(task.billing, raw["billing"], strict=True):
        assert entry.charge_type == given["charge_type"] and entry.amount == Decimal(given["amount"])
        if isinstance(entry, CashCharge):
            assert (entry.currency, entry.list_price) == (given["currency"], Decimal(given["list_price"]))
            assert task.cash() == {given["currency"]: Decimal(given["amount"])}


def _check_listing(doc: dict[str, Any]) -> None:
    page = CursorPage[NewStandardTask].model_validate(KlingResponse.model_validate(doc["response"]).data)
    assert page.count == len(page.result) == 1 and page.has_more and page.next_cursor == "opaque-cursor"
    assert page.result[0].units == Decimal("8")
    assert {f["key"] for f in doc["request"]["filters"]} == {"status", "product_type"}


def _check_billing_package(doc: dict[str, Any]) -> None:
    page = CursorPage[PackageDeduction].model_validate(KlingResponse.model_validate(doc["response"]).data)
    [row] = page.result
    assert (row.unit_before_deduction, row.deduction_amount, row.unit_after_deduction) == (
        Decimal(1000),
        Decimal(8),
        Decimal(992),
    )
    assert row.unit_before_deduction - row.deduction_amount == row.unit_after_deduction


def _check_billing_balance(doc: dict[str, Any]) -> None:
    page = CursorPage[BalanceDeduction].model_validate(KlingResponse.model_validate(doc["response"]).data)
    [row] = page.result
    assert (row.deduction_amount, row.list_price, row.currency) == (Decimal("0.672"), Decimal("0.84"), "USD")
    assert row.balance_before_deduction - row.deduction_amount == row.balance_after_deduction  # type: ignore[operator]


def _check_callback(doc: dict[str, Any]) -> None:
    _check_new_request(doc)
    task = parse_callback(json.dumps(doc["body"], default=str))
    assert isinstance(task, NewStandardTask) and task.units == Decimal("1.5")
    vector = doc["webhook_vector"]
    now = int(vector["headers"]["webhook-timestamp"])
    verify_webhook(vector["secret"], vector["headers"], vector["body"], now=now)
    rotated = dict(vector["headers"])
    rotated["webhook-signature"] = "v1,b2xkLXNlY3JldA== " + rotated["webhook-signature"]  # rotation
    verify_webhook(vector["secret"], rotated, vector["body"].encode(), now=now)
    signed = parse_callback(vector["body"])
    assert isinstance(signed, NewStandardTask) and signed.succeeded and signed.billing == []


def _check_outputs(doc: dict[str, Any]) -> None:
    task = _new_task({"id": "t", "status": "succeeded", "outputs": doc["outputs"], "billing": doc["billing"]})
    assert [type(o) for o in task.outputs] == [VideoOutput, ImageOutput, AudioOutput]
    assert task.videos[0].duration == "5.04" and task.images[0].group_id == "g-1"
    assert task.audios[0].wav_url and task.units == Decimal(8) and task.cash() == {"USD": Decimal("1.12")}
    assert [type(b) for b in task.billing] == [UnitCharge, CashCharge]


def _check_legacy_cash(doc: dict[str, Any]) -> None:
    request = doc["request"]
    assert TextToVideoRequest.model_validate(request).to_body() == request
    task = KlingTask.model_validate(KlingResponse.model_validate(doc["query_response"]).data)
    assert task.final_unit_deduction == 0 and task.paid_in_cash and task.charged == 0
    paid = task.final_balance_deduction
    assert paid is not None and (paid.quota, paid.list_price) == (Decimal("0.896"), Decimal("1.12"))


def _check_lip_sync(doc: dict[str, Any]) -> None:
    faces = FaceIdentification.model_validate(KlingResponse.model_validate(doc["identify_response"]).data)
    assert faces.session_id == "sess-1" and faces.face_data[0].end_time == 5000
    request = doc["create_request"]
    assert AdvancedLipSyncRequest.model_validate(request).to_body() == request
    validate_create("advanced-lip-sync", request, load_catalog("kling-api"))
    task = KlingTask.model_validate(KlingResponse.model_validate(doc["query_response"]).data)
    assert task.final_unit_deduction == Decimal("0.5") and not task.paid_in_cash


NEW_CHECKS = {
    "create": _check_create,
    "tasks": _check_tasks,
    "task_failed": _check_tasks,
    "billing_cash": _check_tasks,
    "listing": _check_listing,
    "billing_package": _check_billing_package,
    "billing_balance": _check_billing_balance,
    "callback": _check_callback,
    "outputs": _check_outputs,
    "legacy_cash": _check_legacy_cash,
    "lip_sync": _check_lip_sync,
}


def test_every_new_standard_document_has_a_check() -> None:
    assert sorted(p.stem for p in NEW_FIXTURES.glob("*.json")) == sorted(NEW_CHECKS)


@pytest.mark.parametrize("path", sorted(NEW_FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_client_models_speak_the_new_documents(path: Path) -> None:
    NEW_CHECKS[path.stem](load(path))
