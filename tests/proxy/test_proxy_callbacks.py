"""Kling's callbacks to the proxy: verified, settled once, never trusted unsigned when a secret is set."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

from kling_cost.errors import AuthError
from kling_cost.signing import sign_webhook, verify_webhook
from tests.proxy.conftest import Proxied, make_proxied
from tests.servers import Receiver, serve

T2V = {"prompt": "a red fox", "model_name": "kling-v2-6", "mode": "std", "duration": "5"}
SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def signed(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    monkeypatch.setenv("KLING_WEBHOOK_SECRET", SECRET)
    with make_proxied(
        ledger_url, monkeypatch, public=True, callback_secret_env="KLING_WEBHOOK_SECRET"
    ) as world:
        world.sim.callbacks.secret = SECRET
        yield world


def test_kling_callback_settles_the_task_without_any_query(signed: Proxied) -> None:
    key = signed.key("cb", budget="10")
    task = signed.client(key).create("text2video", dict(T2V))
    sent = signed.sim.state.tasks[task.task_id]
    assert sent.callback_url == signed.url + "/_kling_cost/callback"  # the proxy's own, not the client's
    signed.finish()
    _until(lambda: signed.ledger.usage("key:cb", "day").used == Decimal("1.5"))
    assert signed.ledger.usage("key:cb", "day").reserved == Decimal(0)
    assert len(signed.ledger.charges()) == 1


def _post(world: Proxied, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(world.url + "/_kling_cost/callback", content=body, headers=headers, timeout=10)


def test_an_unsigned_or_forged_callback_is_refused_and_settles_nothing(signed: Proxied) -> None:
    key = signed.key("forge", budget="10")
    task = signed.client(key).create("text2video", dict(T2V))
    doc = {
        "task_id": task.task_id,
        "task_status": "succeed",
        "task_info": {"external_task_id": task.external_task_id},
        "final_unit_deduction": "0.1",
        "task_result": {"videos": [{"id": "v", "url": "https://x.invalid/v.mp4", "duration": "5"}]},
    }
    body = json.dumps(doc).encode()
    assert _post(signed, body, {"content-type": "application/json"}).status_code == 401
    stamp = str(int(time.time()))
    wrong = sign_webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", "m1", int(stamp), body)
    headers = {"webhook-id": "m1", "webhook-timestamp": stamp, "webhook-signature": wrong}
    assert _post(signed, body, headers).status_code == 401
    assert signed.ledger.usage("key:forge", "day").used == Decimal(0)
    assert signed.ledger.usage("key:forge", "day").reserved == Decimal("1.5")
    # correctly signed: accepted; what it says is settled (a callback carries Kling's charge)
    good = sign_webhook(SECRET, "m2", int(stamp), body)
    ok = _post(signed, body, {"webhook-id": "m2", "webhook-timestamp": stamp, "webhook-signature": good})
    assert ok.status_code == 200
    assert signed.ledger.usage("key:forge", "day").used == Decimal("0.1")
    # replays and Kling's at-least-once retries charge nothing more
    assert _post(signed, body, {"webhook-id": "m2", "webhook-timestamp": stamp, "webhook-signature": good})
    assert len(signed.ledger.charges()) == 1


def test_a_callback_for_a_task_the_proxy_never_sent_is_404(signed: Proxied) -> None:
    body = json.dumps({"task_id": "999", "task_status": "succeed"}).encode()
    stamp = int(time.time())
    headers = {
        "webhook-id": "x",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_webhook(SECRET, "x", stamp, body),
    }
    assert _post(signed, body, headers).status_code == 404


@pytest.fixture
def relaying(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Proxied, str, Receiver]]:
    """Kling calls the proxy back; the proxy relays to a client receiver on loopback."""
    receiver = Receiver()
    with (
        serve(receiver.app()) as hooks,
        make_proxied(
            ledger_url, monkeypatch, public=True, background=True, settle_interval=3600, relay_interval=0.05
        ) as world,
    ):
        yield world, hooks + "/hook", receiver


def test_callbacks_are_relayed_to_the_client_signed_with_the_keys_secret(
    relaying: tuple[Proxied, str, Receiver],
) -> None:
    world, hook, receiver = relaying
    key = world.key("hooked", budget="10", callback_hosts=["127.0.0.1"])
    task = world.client(key).create("text2video", {**T2V, "callback_url": hook})
    assert world.sim.state.tasks[task.task_id].callback_url == world.url + "/_kling_cost/callback"
    world.finish()
    _until(lambda: any(json.loads(b).get("task_status") == "succeed" for _, b in receiver.calls))
    for headers, body in receiver.calls:
        verify_webhook(key.webhook_secret, headers, body)  # raises if not signed with the key's secret
        assert json.loads(body)["task_id"] == task.task_id
    other = world.key("other")
    with pytest.raises(AuthError):
        verify_webhook(other.webhook_secret, receiver.calls[0][0], receiver.calls[0][1])
    assert world.ledger.usage("key:hooked", "day").used == Decimal("1.5")
    statuses = [json.loads(b)["task_status"] for _, b in receiver.calls]
    assert statuses.count("succeed") == 1  # Kling's at-least-once retries relay once per status


def test_a_callback_url_into_the_network_is_refused_at_create(
    relaying: tuple[Proxied, str, Receiver],
) -> None:
    world, hook, _ = relaying
    key = world.key("outsider", budget="10")  # no callback host allowed
    for url in (hook, "http://169.254.169.254/latest/meta-data", "http://10.0.0.8/x", "ftp://example.com/x"):
        res = world.http("POST", "/v1/videos/text2video", key, json={**T2V, "callback_url": url})
        assert (res.status_code, res.json()["code"]) == (400, 1201), url
    assert world.tasks == []
    assert world.ledger.usage("key:outsider", "day").reserved == Decimal(0)


def test_without_a_public_url_the_end_seen_by_a_query_is_relayed_once(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()
    with (
        serve(receiver.app()) as hooks,
        make_proxied(
            ledger_url, monkeypatch, background=True, settle_interval=3600, relay_interval=0.05
        ) as world,
    ):
        key = world.key("polled", callback_hosts=["127.0.0.1"])
        client = world.client(key)
        task = client.create("text2video", {**T2V, "callback_url": hooks + "/hook"})
        assert world.sim.state.tasks[task.task_id].callback_url is None
        world.finish()
        client.get_task("text2video", task.task_id)
        client.get_task("text2video", task.task_id)
        (headers, body), *rest = receiver.wait_for(1)
        verify_webhook(key.webhook_secret, headers, body)
        assert json.loads(body)["task_status"] == "succeed" and rest == []
        time.sleep(0.3)
        assert len(receiver.calls) == 1
