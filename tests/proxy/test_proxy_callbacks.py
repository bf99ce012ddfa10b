"""Kling's callbacks to the proxy: verified, settled once, never trusted unsigned when a secret is set."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

from kling_cost.signing import sign_webhook
from tests.proxy.conftest import Proxied, make_proxied

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
