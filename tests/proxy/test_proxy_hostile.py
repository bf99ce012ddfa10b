"""An outside review's attacks on the proxy (issue 15): each test a defect that was found."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest

from tests.proxy.conftest import Proxied, make_proxied

T2V = {"prompt": "a red fox", "model_name": "kling-v2-6", "mode": "std", "duration": "5"}  # 1.5 units


def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as it is (no client-side path normalisation); the status and body."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _request(method: str, path: str, token: str = "", body: bytes = b"") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: proxy\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _callback(world: Proxied, doc: dict[str, object]) -> httpx.Response:
    return httpx.post(world.url + "/_kling_cost/callback", content=json.dumps(doc).encode(), timeout=10)


@pytest.fixture
def unsigned(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    """Kling calls the proxy back (``--public-url``) without a webhook secret."""
    with make_proxied(ledger_url, monkeypatch, public=True) as world:
        yield world


def test_an_unsigned_callback_is_checked_with_kling_never_trusted(unsigned: Proxied) -> None:
    """Without --callback-secret-env anyone can POST to the callback path: a forged "failed"
    freed the hold of a task Kling went on to charge, and a forged "succeed" committed any
    figure. Now the proxy asks Kling about the task and settles what Kling says."""
    key = unsigned.key("forger", budget="10")
    task = unsigned.client(key).create("text2video", dict(T2V))
    ext = task.external_task_id
    forged_fail = {"task_id": task.task_id, "task_status": "failed", "task_info": {"external_task_id": ext}}
    assert _callback(unsigned, forged_fail).status_code == 200
    usage = unsigned.ledger.usage("key:forger", "day")
    assert (usage.used, usage.reserved) == (Decimal(0), Decimal("1.5"))  # still held: Kling runs it
    unsigned.finish()
    forged_cheap = {**forged_fail, "task_status": "succeed", "final_unit_deduction": "0.1"}
    assert _callback(unsigned, forged_cheap).status_code == 200
    usage = unsigned.ledger.usage("key:forger", "day")
    assert (usage.used, usage.reserved) == (Decimal("1.5"), Decimal(0))  # what Kling deducted
    unsigned.settle()
    assert [c.actual for c in unsigned.ledger.charges()] == [Decimal("1.5")]


UNPRICED_LOOKALIKES = [
    ("POST", "/v1/x/../videos/text2video"),  # httpx resolves dot segments: a create upstream
    ("POST", "/v1/videos/./text2video"),
    ("POST", "/v1/videos/text2video/."),
    ("POST", "/text-to-video/x/../kling-2.6"),
    ("POST", "/v1//videos/text2video"),  # many servers merge slashes
    ("POST", "/V1/Videos/Text2Video"),  # or ignore case
    ("POST", "/v1/videos/text2video;jsessionid=1"),  # or drop path parameters
    ("POST", "/v1/videos/text2video%252F"),
    ("PUT", "/v1/videos/text2video"),
    ("POST", "/v1/videos/text2video/123"),
]


@pytest.fixture
def unpriced(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    with make_proxied(ledger_url, monkeypatch, allow_unpriced=True) as world:
        yield world


def test_create_lookalike_paths_are_never_passed_through_unpriced(unpriced: Proxied) -> None:
    """--allow-unpriced passed ``/v1/x/../videos/text2video`` through as an unknown path, and
    httpx sent it to Kling as ``/v1/videos/text2video``: a task with no reservation."""
    key = unpriced.key("sly", budget="10")
    body = json.dumps(T2V).encode()
    for method, path in UNPRICED_LOOKALIKES:
        status, answer = _raw(unpriced.url, _request(method, path, key.api_key, body))
        assert (status, json.loads(answer)["code"]) == (404, 1202), (method, path, answer)
    assert unpriced.tasks == []
    assert unpriced.ledger.reservations(limit=None) == []
    # a path the proxy truly does not know still passes (Kling answers it)
    status, answer = _raw(unpriced.url, _request("GET", "/v1/unheard-of", key.api_key))
    assert status == 404 and "is not a Kling API method" in json.loads(answer)["message"]


def test_dot_segments_are_refused_without_allow_unpriced(proxied: Proxied) -> None:
    key = proxied.key("dots")
    for path in ("/v1/videos/text2video/..", "/v1/videos/text2video/x/..", "/tasks/."):
        status, answer = _raw(proxied.url, _request("GET", path, key.api_key))
        assert (status, json.loads(answer)["code"]) == (404, 1202), path


def test_any_method_gets_a_kling_shaped_answer(proxied: Proxied) -> None:
    """OPTIONS, TRACE or a made-up method answered Starlette's plain-text 405."""
    key = proxied.key("methods")
    for method in ("OPTIONS", "TRACE", "PROPFIND"):
        status, answer = _raw(proxied.url, _request(method, "/v1/videos/text2video", key.api_key))
        doc = json.loads(answer)
        assert status in (404, 405) and doc["code"] == 1202 and doc["data"] is None, method
    for method in ("FOO", "CONNECT"):  # httptools (uvicorn's fast parser) refuses these itself: 400
        status, answer = _raw(proxied.url, _request(method, "/v1/videos/text2video", key.api_key))
        assert status == 400 or json.loads(answer)["code"] == 1202, method
    assert proxied.tasks == []


def test_nul_and_lone_surrogates_in_ids_and_paths_never_answer_500(unsigned: Proxied) -> None:
    """A callback naming a task by an id with NUL or a lone surrogate, or a query path with
    ``%00``, was a plain-text 500 (the ledger cannot hold such text, so no task has it)."""
    key = unsigned.key("nul", budget="10")
    for raw_doc in (
        '{"task_id": "\\u0000", "external_id": "x"}',
        '{"task_id": "1", "external_id": "\\ud800"}',
    ):
        status, answer = _raw(unsigned.url, _request("POST", "/_kling_cost/callback", body=raw_doc.encode()))
        assert (status, json.loads(answer)["code"]) == (404, 1203), raw_doc
    for path in ("/v1/videos/text2video/%00", "/v1/videos/text2video/a%0Ab"):
        status, answer = _raw(unsigned.url, _request("GET", path, key.api_key))
        assert status in (400, 404) and json.loads(answer)["code"] in (1200, 1202, 1203), path
    status, answer = _raw(
        unsigned.url, _request("GET", "/tasks?external_task_ids=a%00b,%ED%A0%80", key.api_key)
    )
    assert status in (200, 400) and json.loads(answer)["code"] in (0, 1201)
    assert unsigned.tasks == []


@pytest.fixture
def small(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    with make_proxied(ledger_url, monkeypatch, public=True, max_body_bytes=2048) as world:
        yield world


def _chunked(method: str, path: str, token: str, size: int) -> bytes:
    chunk = b"A" * 1024
    out = (
        f"{method} {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {token}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    for _ in range(size // 1024):
        out += b"400\r\n" + chunk + b"\r\n"
    return out + b"0\r\n\r\n"


def test_the_body_limit_holds_on_every_path_that_reads_a_body(small: Proxied) -> None:
    """The callback path, identify-face and ``POST /tasks`` read the whole body, however big,
    before (or without) checking it: an unauthenticated caller could fill the proxy's memory."""
    key = small.key("bulky")
    for path in ("/_kling_cost/callback", "/v1/videos/identify-face", "/tasks"):
        big = json.dumps({"video_url": "A" * 4096}).encode()
        status, answer = _raw(small.url, _request("POST", path, key.api_key, big))
        assert (status, json.loads(answer)["code"]) == (413, 1200), path
        status, answer = _raw(small.url, _chunked("POST", path, key.api_key, 8192))
        assert (status, json.loads(answer)["code"]) == (413, 1200), path
    assert small.tasks == []


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_jwt_whose_iss_the_ledger_cannot_hold_is_1002(proxied: Proxied) -> None:
    """A JWT's payload is any JSON: an ``iss`` with a lone surrogate was a plain-text 500, one
    with NUL a 503 "ledger unavailable" on PostgreSQL (no key can have such an access key)."""
    proxied.key("real")
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    for iss in ('"a\\u0000"', '"a\\ud800"', '"\\udc80"'):
        payload = _b64(f'{{"iss": {iss}, "exp": {int(time.time()) + 1800}}}'.encode())
        signature = _b64(hmac.new(b"guess", f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{signature}"
        res = proxied.http("GET", "/v1/videos/text2video", headers={"Authorization": f"Bearer {token}"})
        assert (res.status_code, res.json()["code"]) == (401, 1002), iss


def test_a_lip_sync_is_reserved_at_its_worst_case_never_at_a_client_hint(proxied: Proxied) -> None:
    """A lip-sync was reserved at the body's ``input.duration`` (a hint of the guard's, not a
    Kling field): ``"duration": 1`` held 0.5 units for a task Kling charged 1.0, so concurrent
    lip-syncs went past any budget. The proxy holds the longest video Kling makes (180 s: 18
    units) and commits what Kling charged."""
    maker = proxied.key("maker")
    made = proxied.client(maker).create("text2video", {**T2V, "duration": "10"})
    proxied.finish(20)
    video = proxied.client(maker).get_task("text2video", made.task_id).videos[0].id
    key = proxied.key("lips", budget="20")
    body = {"input": {"video_id": video, "mode": "text2video", "text": "hi", "voice_id": "v", "duration": 1}}
    res = proxied.http("POST", "/v1/videos/lip-sync", key, json=body)
    assert res.status_code == 200, res.text
    assert proxied.ledger.usage("key:lips", "day").reserved == Decimal(18)
    proxied.finish(20)
    proxied.settle()
    usage = proxied.ledger.usage("key:lips", "day")
    assert (usage.used, usage.reserved) == (Decimal("1.0"), Decimal(0))  # Kling's 0.5 x two 5 s blocks


def test_a_long_external_task_id_is_1201_not_ledger_unavailable(proxied: Proxied) -> None:
    """An ``external_task_id`` of a few kilobytes (random, so PostgreSQL cannot compress it
    into its index) was claimed before its length was checked: 503 "ledger unavailable",
    logged as a ledger failure. It is a bad parameter, refused before anything is held."""
    key = proxied.key("longid", budget="10")
    for ext in (secrets.token_hex(101), secrets.token_hex(5000)):
        res = proxied.http("POST", "/v1/videos/text2video", key, json={**T2V, "external_task_id": ext})
        assert (res.status_code, res.json()["code"]) == (400, 1201), res.text
        new = {"prompt": "x", "settings": {"duration": 5}, "options": {"external_task_id": ext}}
        res = proxied.http("POST", "/text-to-video/kling-2.6", key, json=new)
        assert (res.status_code, res.json()["code"]) == (400, 1201), res.text
    assert proxied.tasks == [] and proxied.ledger.reservations(limit=None) == []


def test_retrying_refused_external_ids_cannot_pass_the_concurrency_limit(proxied: Proxied) -> None:
    """A key already owning an ``external_task_id`` skipped the concurrency count: creates
    Kling refused (their holds released) left their ids claimed, and resending them all with
    a valid body ran three tasks at once on a key limited to one. The claim also kept the first
    attempt's endpoint, so the settler asked Kling for the task at the wrong path forever (its
    hold lapsed uncharged)."""
    key = proxied.key("burst", budget="100", concurrency=1)
    for i in range(3):
        res = proxied.http(
            "POST", "/v1/videos/video-extend", key, json={"video_id": "no", "external_task_id": f"e{i}"}
        )
        assert (res.status_code, res.json()["code"]) == (400, 1201)  # Kling's refusal: released
    answers = [
        proxied.http("POST", "/v1/videos/text2video", key, json={**T2V, "external_task_id": f"e{i}"})
        for i in range(3)
    ]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(200, 0), (429, 1303), (429, 1303)]
    assert len(proxied.tasks) == 1
    again = proxied.http("POST", "/v1/videos/text2video", key, json={**T2V, "external_task_id": "e0"})
    assert again.json()["data"]["task_id"] == answers[0].json()["data"]["task_id"]  # a retry: same task
    proxied.finish()
    proxied.settle()  # the retry was a text2video: the settler asks Kling there, not at video-extend
    assert proxied.ledger.usage("key:burst", "day").used == Decimal("1.5")
    res = proxied.http("POST", "/v1/videos/text2video", key, json={**T2V, "external_task_id": "e1"})
    assert res.status_code == 200 and len(proxied.tasks) == 2  # the slot is free again
