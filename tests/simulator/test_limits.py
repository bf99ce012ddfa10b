"""Hostile requests over real HTTP get Kling's answers, never a 500: JWT claims of the wrong
type, bodies over the size limit, JSON nested too deep or not JSON at all."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from kling_cost import ConfigurationError, InvalidRequest, ValidationError
from kling_cost.kling import JWTAuth
from kling_cost.kling.limits import MAX_BODY_BYTES, BodyLimits, parse_json_body
from kling_cost.simulator import SimulatorState, create_app
from tests.servers import AK, API_KEY, SK, serve

T2V = "/v1/videos/text2video"
I2V = "/v1/videos/image2video"


def answer(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    assert set(body) == {"code", "message", "request_id", "data"} and body["data"] is None
    return response.status_code, body["code"], body["message"]


@pytest.fixture
def site() -> Iterator[tuple[str, SimulatorState]]:
    app = create_app(
        AK, SK, api_key=API_KEY, task_seconds=5, failure_rate=0, limits=BodyLimits(max_bytes=4096)
    )
    with serve(app) as url:
        yield url, app.state.simulator.state


def token(**claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": AK, "exp": now + 1800, "nbf": now - 5, **claims}
    return "Bearer " + jwt.encode({k: v for k, v in payload.items() if v is not ...}, SK, algorithm="HS256")


@pytest.mark.parametrize(
    "claims",
    [
        {"nbf": "0"},
        {"nbf": "soon"},
        {"nbf": None},
        {"nbf": [1]},
        {"exp": "4102444800"},  # 2100-01-01, as a string: a valid time of the wrong type
        {"exp": float("nan")},
        {"exp": True},
        {"iat": "1700000000"},
        {"iat": float("inf")},
    ],
    ids=repr,
)
def test_time_claims_of_the_wrong_type_are_invalid_tokens(
    site: tuple[str, SimulatorState], claims: Any
) -> None:
    url, state = site
    got = httpx.post(url + T2V, json={"prompt": "a fox"}, headers={"Authorization": token(**claims)})
    assert answer(got)[:2] == (401, 1002)
    assert "must be a number" in answer(got)[2] or "invalid" in answer(got)[2]
    assert state.tasks == {}


def test_well_typed_tokens_still_work(site: tuple[str, SimulatorState]) -> None:
    url, _ = site
    now = time.time()
    for header in (
        token(),
        token(nbf=...),  # nbf is optional
        token(exp=now + 60.5, nbf=now - 1.5, iat=int(now)),
        JWTAuth(AK, SK).authorization(),
    ):
        got = httpx.post(url + T2V, json={"prompt": "a fox"}, headers={"Authorization": header})
        assert got.status_code == 200, got.text
    assert answer(httpx.get(url + T2V, headers={"Authorization": token(nbf=int(now) + 600)}))[:2] == (
        401,
        1003,
    )
    assert answer(httpx.get(url + T2V, headers={"Authorization": token(exp=int(now) - 1)}))[:2] == (401, 1004)


def test_bodies_over_the_limit_get_1200_and_413(site: tuple[str, SimulatorState]) -> None:
    url, state = site
    auth = {"Authorization": f"Bearer {API_KEY}"}
    fits = json.dumps({"prompt": "p", "image": "a" * 4000}).encode()
    fits += b" " * (4096 - len(fits))
    assert len(fits) == 4096
    assert httpx.post(url + I2V, content=fits, headers=auth).status_code == 200
    over = fits + b" "
    assert answer(httpx.post(url + I2V, content=over, headers=auth)) == (
        413,
        1200,
        "request body is larger than 4096 bytes",
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"prompt": "p", "image": "'
        for _ in range(8):
            yield b"a" * 1000
        yield b'"}'

    assert answer(httpx.post(url + I2V, content=chunks(), headers=auth))[:2] == (413, 1200)
    no_auth = httpx.post(url + I2V, content=over)  # who is asking is checked before any body is read
    assert answer(no_auth)[:2] == (401, 1001)
    assert len(state.tasks) == 1


def test_the_default_limit_refuses_a_declared_size_before_reading_it() -> None:
    app = create_app(AK, SK, api_key=API_KEY, task_seconds=5)
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (
            f"POST {T2V} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode())  # and not one byte of the 64 MiB announced
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        body = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert status_line.split()[1] == b"413"
        assert (body["code"], body["message"]) == (1200, "request body is larger than 64 MiB")
        assert app.state.simulator.state.tasks == {}


def nested(depth: int) -> bytes:
    return b'{"prompt": "p", "camera_control": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (nested(32), "nests deeper than 32 levels"),
        (nested(990), "nests deeper than 32 levels"),
        (nested(200_000), "nests deeper than 32 levels"),
        (b'{"prompt": "p", "cfg_scale": NaN}', "not valid JSON"),
        (b'{"prompt": "p", "cfg_scale": 1e999}', "not valid JSON"),
        (b'{"prompt": "p", "n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"prompt": "\xff\xfe"}', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"prompt": "p"', "not valid JSON"),
    ],
    ids=["depth33", "depth990", "depth200k", "nan", "inf", "bigint", "latin1", "empty", "truncated"],
)
def test_bad_json_is_400_1200_never_500(body: bytes, words: str) -> None:
    app = create_app(AK, SK, api_key=API_KEY, task_seconds=5)
    with serve(app) as url:
        got = httpx.post(url + T2V, content=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert answer(got)[:2] == (400, 1200) and words in answer(got)[2], got.text
        assert app.state.simulator.state.tasks == {}


def test_klings_own_deepest_body_is_accepted() -> None:
    app = create_app(AK, SK, api_key=API_KEY, task_seconds=5)
    body = {
        "image": "a.png",
        "model_name": "kling-v1",
        "dynamic_masks": [{"mask": "m.png", "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}],
    }
    with serve(app) as url:
        got = httpx.post(url + I2V, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert got.status_code == 200, got.text


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (T2V, {"prompt": "p", "duration": "9" * 5000}, 1201),
        (T2V, {"prompt": "p", "duration": "²"}, 1201),
        ("/v1/images/generations", {"prompt": "p", "n": "1" * 30}, 1201),
        ("/_simulator/fail-next", {"times": "x"}, 1201),
        ("/_simulator/fail-next", {"times": -1}, 1201),
        ("/_simulator/packs/video", {"remaining": "x"}, 1201),
        ("/_simulator/packs/video", {"remaining": None}, 1201),
        ("/_simulator/packs/video", {"remaining": "NaN"}, 1201),
        ("/_simulator/faults", {"code": 1302, "times": "x"}, 1201),
    ],
)
def test_odd_values_are_klings_1201_not_a_500(path: str, body: Any, code: int) -> None:
    app = create_app(AK, SK, api_key=API_KEY, task_seconds=5)
    with serve(app) as url:
        got = httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert answer(got)[:2] == (400, code), got.text


def test_the_guard_as_a_library_piece() -> None:
    assert parse_json_body(b'{"a": [1, {"b": 2}]}', BodyLimits(max_depth=3)) == {"a": [1, {"b": 2}]}
    with pytest.raises(InvalidRequest) as caught:
        parse_json_body(b'{"a": [1, {"b": 2}]}', BodyLimits(max_depth=2))
    assert (caught.value.code, caught.value.http_status) == (1200, 400)
    with pytest.raises(InvalidRequest) as caught:
        parse_json_body(b"[1]", BodyLimits(max_bytes=2))
    assert (caught.value.code, caught.value.http_status) == (1200, 413)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigurationError):
            BodyLimits(max_bytes=bad)  # type: ignore[arg-type]


# Found by an outside review: a pack size beyond Decimal's range was accepted, and from then
# on every request that moved a task on answered 500 (decimal.Overflow): the simulator was dead.


@pytest.mark.parametrize("remaining", ["1e999999999", "1E+1000000", "1e13", "-5", "Infinity"])
def test_an_absurd_pack_size_is_1201_and_the_simulator_keeps_working(remaining: str) -> None:
    app = create_app(AK, SK, api_key=API_KEY, task_seconds=0)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with serve(app) as url:
        got = httpx.post(url + "/_simulator/packs/video", json={"remaining": remaining}, headers=auth)
        assert answer(got)[:2] == (400, 1201), got.text
        created = httpx.post(url + T2V, json={"prompt": "a fox"}, headers=auth)
        assert created.status_code == 200, created.text
        task_id = created.json()["data"]["task_id"]
        polled = httpx.get(f"{url}{T2V}/{task_id}", headers=auth)
        assert polled.status_code == 200 and polled.json()["data"]["task_status"] == "succeed", polled.text
        costs = httpx.get(url + "/account/costs?start_time=0&end_time=9999999999999", headers=auth)
        assert costs.status_code == 200, costs.text


@pytest.mark.parametrize(
    "settings",
    [
        {"video_units": "1e999999"},
        {"image_units": "NaN"},
        {"tryon_units": "-1"},
        {"task_seconds": float("inf")},
        {"task_seconds": float("nan")},
    ],
    ids=repr,
)
def test_a_simulator_built_with_absurd_settings_is_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):  # a ValueError too
        create_app(AK, SK, **settings)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--video-units", "1e999999"),
        ("--image-units", "nan"),
        ("--tryon-units", "-1"),
        ("--task-seconds", "inf"),
    ],
)
def test_simulate_with_absurd_settings_is_one_line(flag: str, value: str) -> None:
    from typer.testing import CliRunner

    from kling_cost.cli import app as cli

    result = CliRunner().invoke(cli, ["simulate", "--port", "0", flag, value])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Kling simulator on" not in result.stdout
