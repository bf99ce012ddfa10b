"""Error mapping, including shapes a real peer cannot produce (httpx.MockTransport)."""

from __future__ import annotations

import httpx
import pytest

from kling_cost import errors
from kling_cost.kling import KlingClient, RetryPolicy, error_for
from kling_cost.kling.models import KlingTask
from tests.servers import AK, SK


@pytest.mark.parametrize(
    ("code", "family"),
    [
        (1000, errors.AuthError),
        (1004, errors.AuthError),
        (1100, errors.AccountError),
        (1304, errors.AccountError),
        (1102, errors.InsufficientBalance),
        (1103, errors.PermissionDenied),
        (1200, errors.InvalidRequest),
        (1203, errors.InvalidRequest),
        (1300, errors.ContentRejected),
        (1301, errors.ContentRejected),
        (1302, errors.RateLimited),
        (1303, errors.ConcurrencyLimited),
        (5000, errors.ServerError),
        (5002, errors.ServerError),
    ],
)
def test_codes_map_to_families(code: int, family: type[errors.KlingAPIError]) -> None:
    err = error_for(code, "boom", request_id="r-1", http_status=429)
    assert type(err) is family
    assert (err.code, err.message, err.request_id) == (code, "boom", "r-1")
    assert "r-1" in str(err)


def client_for(handler: httpx.MockTransport, **kwargs: object) -> KlingClient:
    http = httpx.Client(transport=handler)
    return KlingClient(AK, SK, base_url="http://kling.test", http_client=http, **kwargs)  # type: ignore[arg-type]


def test_http_200_with_an_error_code_raises() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"code": 5000, "message": "internal", "request_id": "rq"})

    client = client_for(httpx.MockTransport(handler), retry=RetryPolicy(attempts=2, base_delay=0))
    with client._http, pytest.raises(errors.ServerError) as info:
        client.get_task("text2video", "1")
    assert info.value.code == 5000 and info.value.http_status == 200
    assert len(calls) == 2  # a query is retried


def test_truncated_body_is_a_server_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"code": 0, "message": "SUCC')

    client = client_for(httpx.MockTransport(handler), retry=RetryPolicy.off())
    with client._http, pytest.raises(errors.ServerError, match="not JSON"):
        client.list_tasks("image")


def test_transport_failure_is_a_server_error_from_httpx() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = client_for(httpx.MockTransport(handler), retry=RetryPolicy.off())
    with client._http, pytest.raises(errors.ServerError) as info:
        client.text_to_video("x", external_task_id="t")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_models_parse_exact_money() -> None:
    task = KlingTask.model_validate(
        {"task_id": "1", "task_status": "succeed", "final_unit_deduction": "0.105", "created_at": 1}
    )
    assert str(task.final_unit_deduction) == "0.105"
    assert RetryPolicy(base_delay=1, jitter=0).delay(3) == 4
    assert RetryPolicy(base_delay=1, max_delay=5, jitter=0).delay(10) == 5
