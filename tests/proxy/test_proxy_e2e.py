"""The proxy end to end: the project's own client through it, budgets, keys, settlement."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from kling_cost.errors import AuthError, InsufficientBalance, KlingAPIError
from tests.proxy.conftest import Proxied, make_proxied

T2V = {"prompt": "a red fox", "model_name": "kling-v2-6", "mode": "std", "duration": "5"}  # 1.5 units
NEW = {"prompt": "a red fox", "settings": {"duration": 5}}  # /text-to-video/kling-2.6: 1.5 units


def _deducted(world: Proxied) -> Decimal:
    """What Kling took from the video pack."""
    pack = world.sim.state.packs["video"]
    return Decimal(pack.total) - Decimal(pack.remaining)


def test_the_projects_client_through_the_proxy_is_charged_what_kling_deducted(proxied: Proxied) -> None:
    key = proxied.key("film-bot", budget="10", scopes=["project:film"])
    client = proxied.client(key)
    task = client.create("text2video", dict(T2V))
    assert task.task_status == "submitted"
    assert task.external_task_id and task.external_task_id.startswith("kcp-")  # injected
    usage = proxied.ledger.usage("key:film-bot", "day")
    assert usage.reserved == Decimal("1.5")
    proxied.finish()
    done = client.get_task("text2video", task.task_id)  # a query that shows the end settles it
    assert done.task_status == "succeed"
    usage = proxied.ledger.usage("key:film-bot", "day")
    assert (usage.used, usage.reserved) == (Decimal("1.5"), Decimal(0))
    charges = proxied.ledger.charges()
    assert len(charges) == 1 and charges[0].actual == Decimal(done.final_unit_deduction or "0")
    assert charges[0].actual == _deducted(proxied) == Decimal("1.5")
    assert set(charges[0].scopes) == {"account", "key:film-bot", "project:film"}
    # querying again, or the settler passing, never charges twice
    client.get_task("text2video", task.task_id)
    proxied.settle()
    assert len(proxied.ledger.charges()) == 1


def test_new_standard_through_the_proxy_with_the_bearer_key(proxied: Proxied) -> None:
    key = proxied.key("new-bot", budget="10")
    client = proxied.client(key, bearer=True)
    task = client.create("/text-to-video/kling-2.6", {**NEW, "settings": {"duration": 5}})
    assert task.external_task_id and task.external_task_id.startswith("kcp-")
    assert proxied.ledger.usage("key:new-bot", "day").reserved == Decimal("1.5")
    proxied.finish()
    done = client.get_task("/text-to-video/kling-2.6", task.task_id)
    assert done.status == "succeeded"
    assert proxied.ledger.usage("key:new-bot", "day").used == Decimal("1.5")
    # the new standard takes the API key only, through the proxy as at Kling
    jwt_client = proxied.client(key)
    with pytest.raises(AuthError) as caught:
        jwt_client.create("/text-to-video/kling-2.6", dict(NEW))
    assert caught.value.code in (1000, None) or "API key" in str(caught.value)


def test_a_refused_create_is_429_1102_naming_the_budget_and_sends_nothing(proxied: Proxied) -> None:
    key = proxied.key("small", budget="2")
    client = proxied.client(key)
    client.create("text2video", dict(T2V))
    with pytest.raises(InsufficientBalance) as caught:
        client.create("text2video", dict(T2V))
    assert caught.value.code == 1102 and caught.value.http_status == 429
    assert "key:small" in str(caught.value) and "0.5 available" in str(caught.value)
    assert len(proxied.tasks) == 1
    raw = proxied.http("POST", "/v1/videos/text2video", key, json=T2V)
    assert raw.status_code == 429 and raw.json()["code"] == 1102 and raw.json()["data"] is None


def test_the_key_policy_models_max_per_request_and_concurrency(proxied: Proxied) -> None:
    only = proxied.key("only-26", models=["kling-2.6"], max_per_request=Decimal(2), concurrency=1)
    res = proxied.http("POST", "/v1/videos/text2video", only, json={**T2V, "model_name": "kling-v2-5-turbo"})
    assert (res.status_code, res.json()["code"]) == (403, 1103)
    res = proxied.http("POST", "/v1/videos/text2video", only, json={**T2V, "mode": "pro", "duration": "10"})
    assert (res.status_code, res.json()["code"]) == (429, 1102)
    assert "per-request maximum" in res.json()["message"]
    assert (
        proxied.http("POST", "/v1/videos/text2video", only, json=T2V).status_code == 200
    )  # kling-v2-6 = 2.6
    res = proxied.http("POST", "/v1/videos/text2video", only, json=T2V)
    assert (res.status_code, res.json()["code"]) == (429, 1303)
    assert len(proxied.tasks) == 1
    proxied.finish()
    proxied.settle()  # the task ends: a slot frees
    assert proxied.http("POST", "/v1/videos/text2video", only, json=T2V).status_code == 200


def test_unpriceable_unknown_and_oversized_requests_are_refused_before_kling(
    proxied: Proxied,
) -> None:
    key = proxied.key("edge")
    res = proxied.http("POST", "/v1/videos/text2video", key, json={**T2V, "duration": "7"})
    assert (res.status_code, res.json()["code"]) == (400, 1201)
    res = proxied.http("POST", "/v1/videos/text2video", key, json={**T2V, "model_name": "kling-v9"})
    assert (res.status_code, res.json()["code"]) == (400, 1201)
    res = proxied.http("POST", "/v1/videos/unheard-of", key, json=T2V)
    assert (res.status_code, res.json()["code"]) == (404, 1202)
    res = proxied.http("POST", "/v1/videos/text2video", key, content=b"{not json")
    assert (res.status_code, res.json()["code"]) == (400, 1200)
    res = proxied.http("POST", "/v1/videos/text2video", key, json=["a list"])
    assert (res.status_code, res.json()["code"]) == (400, 1200)
    assert proxied.tasks == []
    assert proxied.ledger.reservations(limit=None) == []


def test_auth_answers_kling_codes(proxied: Proxied) -> None:
    key = proxied.key("auth")
    res = proxied.http("POST", "/v1/videos/text2video", json=T2V)
    assert (res.status_code, res.json()["code"]) == (401, 1001)
    res = proxied.http("POST", "/v1/videos/text2video", json=T2V, headers={"Authorization": "Bearer nope"})
    assert (res.status_code, res.json()["code"]) == (401, 1002)
    real = {"Authorization": f"Bearer {API_KEY_OF_SIM}"}
    res = proxied.http("POST", "/v1/videos/text2video", json=T2V, headers=real)
    assert res.status_code == 401  # Kling's own key is not a virtual key: it never passes
    assert proxied.client(key).create("text2video", dict(T2V)).task_id
    assert len(proxied.tasks) == 1


API_KEY_OF_SIM = "test-api-key"


def test_a_revoked_key_is_refused_on_the_next_request(proxied: Proxied) -> None:
    key = proxied.key("gone")
    client = proxied.client(key)
    task = client.create("text2video", dict(T2V))
    proxied.keys.revoke("gone")
    with pytest.raises(AuthError):
        client.create("text2video", dict(T2V))
    with pytest.raises(AuthError):
        client.get_task("text2video", task.task_id)
    bearer = proxied.http("GET", f"/v1/videos/text2video/{task.task_id}", key)
    assert bearer.status_code == 401
    assert len(proxied.tasks) == 1


def test_a_key_cannot_read_list_or_be_charged_for_another_keys_task(proxied: Proxied) -> None:
    alice, bob = proxied.key("alice", budget="10"), proxied.key("bob", budget="10")
    mine = proxied.client(alice).create("text2video", {**T2V, "external_task_id": "alice-1"})
    theirs = proxied.client(bob).create("text2video", dict(T2V))
    newer = proxied.client(bob, bearer=True).create("/text-to-video/kling-2.6", dict(NEW))
    for ident in (mine.task_id, "alice-1"):
        res = proxied.http("GET", f"/v1/videos/text2video/{ident}", bob)
        assert (res.status_code, res.json()["code"]) == (404, 1203)
    own = proxied.http("GET", f"/v1/videos/text2video/{mine.task_id}", alice)
    assert own.status_code == 200 and own.json()["data"]["task_id"] == mine.task_id
    listed = proxied.http("GET", "/v1/videos/text2video?pageNum=1&pageSize=30", bob).json()["data"]
    assert [t["task_id"] for t in listed] == [theirs.task_id]
    alices_new = proxied.client(alice, bearer=True).create("/text-to-video/kling-2.6", dict(NEW))
    by_ids = proxied.http("GET", f"/tasks?task_ids={alices_new.task_id},{newer.task_id}", bob)
    assert by_ids.status_code == 200 and [t["id"] for t in by_ids.json()["data"]] == [newer.task_id]
    listing = proxied.http("POST", "/tasks", bob, json={}).json()["data"]
    assert [t["id"] for t in listing["result"]] == [newer.task_id] and listing["count"] == 1
    # bob reusing alice's external id is refused, and charges nothing to anyone
    res = proxied.http("POST", "/v1/videos/text2video", bob, json={**T2V, "external_task_id": "alice-1"})
    assert (res.status_code, res.json()["code"]) == (400, 1201)
    assert proxied.ledger.usage("key:bob", "day").reserved == Decimal(3)
    assert proxied.ledger.usage("key:alice", "day").reserved == Decimal(3)
    proxied.finish()
    proxied.http("GET", f"/v1/videos/text2video/{mine.task_id}", bob)  # bob's look settles nothing of alice's
    assert proxied.ledger.usage("key:alice", "day").used == Decimal(0)


def test_the_same_external_id_twice_is_one_task_and_one_charge(proxied: Proxied) -> None:
    key = proxied.key("retry", budget="10")
    client = proxied.client(key)
    first = client.create("text2video", {**T2V, "external_task_id": "job-7"})
    again = client.create("text2video", {**T2V, "external_task_id": "job-7"})
    assert first.task_id == again.task_id and len(proxied.tasks) == 1
    assert proxied.ledger.usage("key:retry", "day").reserved == Decimal("1.5")


def test_the_settler_settles_without_any_query_once(proxied: Proxied) -> None:
    key = proxied.key("quiet", budget="10")
    proxied.client(key).create("text2video", dict(T2V))
    proxied.settle()
    assert proxied.ledger.usage("key:quiet", "day").reserved == Decimal("1.5")  # still running
    proxied.finish()
    proxied.settle()
    proxied.settle()
    usage = proxied.ledger.usage("key:quiet", "day")
    assert (usage.used, usage.reserved) == (Decimal("1.5"), Decimal(0))
    assert len(proxied.ledger.charges()) == 1


def test_a_failed_task_costs_nothing(proxied: Proxied) -> None:
    key = proxied.key("unlucky", budget="10")
    client = proxied.client(key)
    task = client.create("text2video", dict(T2V))
    proxied.sim.state.fail_task(task.task_id)
    proxied.finish()
    done = client.get_task("text2video", task.task_id)
    assert done.task_status == "failed"
    usage = proxied.ledger.usage("key:unlucky", "day")
    assert (usage.used, usage.reserved) == (Decimal(0), Decimal(0))


def test_account_costs_shows_the_keys_budgets_as_packs(proxied: Proxied) -> None:
    key = proxied.key("packs", budget="10", scopes=["project:film"])
    proxied.ledger.set_budget("project:film", 100, "month")
    proxied.client(key).create("text2video", dict(T2V))
    costs = proxied.client(key).account_costs()
    packs = {p.resource_pack_name: p for p in costs.resource_pack_subscribe_infos}
    day = packs["key:packs day budget (units)"]
    assert (Decimal(str(day.total_quantity)), Decimal(str(day.remaining_quantity))) == (
        Decimal(10),
        Decimal("8.5"),
    )
    assert day.status == "online" and day.invalid_time > day.effective_time
    assert "project:film month budget (units)" in packs


def test_the_ledger_unreachable_answers_503_5000_and_sends_nothing(proxied: Proxied) -> None:
    key = proxied.key("down")
    proxied.ledger.close()
    res = proxied.http("POST", "/v1/videos/text2video", key, json=T2V)
    assert (res.status_code, res.json()["code"]) == (503, 5000)
    assert proxied.tasks == []


def test_fifty_concurrent_clients_on_a_budget_for_ten(proxied: Proxied) -> None:
    key = proxied.key("burst", budget="15")  # ten tasks of 1.5 units
    outcomes: list[object] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def one() -> None:
        client = proxied.client(key, bearer=True)
        start.wait()
        try:
            outcome: object = client.create("text2video", dict(T2V)).task_id
        except KlingAPIError as exc:
            outcome = (exc.http_status, exc.code)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    accepted = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(accepted) == 10 and len(proxied.tasks) == 10
    assert set(refused) == {(429, 1102)} and len(refused) == 40
    usage = proxied.ledger.usage("key:burst", "day")
    assert usage.used + usage.reserved == Decimal(15)


def test_metrics_count_requests_refusals_spend_and_read_budgets_from_the_ledger(proxied: Proxied) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    key = proxied.key("metered", budget="2")
    client = proxied.client(key)
    task = client.create("text2video", dict(T2V))
    with pytest.raises(InsufficientBalance):
        client.create("text2video", dict(T2V))
    proxied.finish()
    client.get_task("text2video", task.task_id)
    page = proxied.http("GET", "/metrics")
    assert page.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("kling_cost_proxy_requests_total", route="create", method="POST", status="200") == 1
    assert value("kling_cost_proxy_requests_total", route="create", method="POST", status="429") == 1
    assert value("kling_cost_proxy_refusals_total", reason="budget") == 1
    assert value("kling_cost_proxy_spend_total", scope="key:metered", model="kling-v2-6", unit="units") == 1.5
    assert value("kling_cost_budget_remaining", scope="key:metered", window="day", unit="units") == 0.5
    assert value("kling_cost_proxy_added_latency_seconds_count", route="create") == 2
    assert value("kling_cost_proxy_upstream_request_duration_seconds_count", route="create") == 1
    assert "authorization" not in page.text.lower() and key.api_key not in page.text


def test_the_clients_callback_url_never_reaches_kling(proxied: Proxied) -> None:
    key = proxied.key("hooks", callback_hosts=["127.0.0.1"])
    body = {**T2V, "callback_url": "http://127.0.0.1:9/mine"}
    task = proxied.client(key).create("text2video", body)
    assert proxied.sim.state.tasks[task.task_id].callback_url is None  # no --public-url: polled
    owned = proxied.ledger.proxy.owner(task_id=task.task_id)
    assert owned is not None and owned.callback_url == "http://127.0.0.1:9/mine"


def test_the_bill_and_unknown_paths_are_closed_to_virtual_keys(proxied: Proxied) -> None:
    key = proxied.key("nosy")
    res = proxied.http("POST", "/account/billing/package", key, json={})
    assert (res.status_code, res.json()["code"]) == (403, 1103)
    res = proxied.http("GET", "/v1/anything/else", key)
    assert (res.status_code, res.json()["code"]) == (404, 1202)
    res = proxied.http("DELETE", "/v1/videos/text2video/1", key)
    assert (res.status_code, res.json()["code"]) == (404, 1202)


def test_identify_face_is_free_and_passed_through(proxied: Proxied) -> None:
    key = proxied.key("faces")
    res = proxied.http(
        "POST", "/v1/videos/identify-face", key, json={"video_url": "https://example.invalid/v.mp4"}
    )
    assert res.status_code == 200 and res.json()["code"] == 0 and res.json()["data"]["session_id"]
    assert proxied.ledger.reservations(limit=None) == []


@pytest.fixture
def small_bodies(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    with make_proxied(ledger_url, monkeypatch, max_body_bytes=2048, allow_unpriced=True) as world:
        yield world


def test_a_body_over_the_limit_is_413_1200_and_unpriced_paths_pass_when_allowed(
    small_bodies: Proxied,
) -> None:
    key = small_bodies.key("big")
    res = small_bodies.http("POST", "/v1/videos/image2video", key, json={**T2V, "image": "A" * 4096})
    assert (res.status_code, res.json()["code"]) == (413, 1200)
    assert small_bodies.tasks == []
    # --allow-unpriced: a path the proxy cannot price goes through as it is (Kling answers it)
    res = small_bodies.http("GET", "/v1/unheard-of", key)
    assert res.status_code == 404 and "is not a Kling API method" in res.json()["message"]  # Kling's words
