"""Review of issue 14: hostile new-standard answers about money are our errors, never a
silently smaller charge."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_cost import errors
from kling_cost.kling import KlingClient, RetryPolicy, parse_callback
from tests.servers import API_KEY


def _answering(data: Any) -> KlingClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return KlingClient(
        api_key=API_KEY, base_url="http://kling.test", http_client=http, retry=RetryPolicy.off()
    )


NEGATIVE = [
    [{"charge_type": "unit", "amount": "-1", "package_type": "video"}],
    [{"charge_type": "unit", "amount": "8"}, {"charge_type": "unit", "amount": "-8"}],  # "billed", sums to 0
    [{"charge_type": "unit", "amount": -2}],
    [{"charge_type": "cash", "amount": "-1.12", "currency": "USD", "list_price": "1.40"}],
    [{"charge_type": "cash", "amount": "1.12", "currency": "USD", "list_price": "-1.40"}],
]


@pytest.mark.parametrize("billing", NEGATIVE)
def test_a_negative_billing_amount_is_an_unreadable_answer(billing: list[dict[str, Any]]) -> None:
    """A negative entry used to be summed: [8, -8] committed 0 units for a task Kling billed."""
    task = {"id": "t-1", "status": "succeeded", "billing": billing}
    with _answering([task]) as kling, pytest.raises(errors.ServerError, match="must not be negative"):
        kling.get_task("/tasks", "t-1")
    with pytest.raises(errors.ServerError, match="must not be negative"):
        parse_callback(json.dumps(task))


@pytest.mark.parametrize("amount", ["0", "-0", "8.000", "1e1", 8])
def test_zero_and_positive_billing_amounts_are_read_exactly(amount: object) -> None:
    task = {"id": "t-1", "status": "succeeded", "billing": [{"charge_type": "unit", "amount": amount}]}
    with _answering([task]) as kling:
        got = kling.get_task("/tasks", "t-1")
    assert got.units == Decimal(str(amount))


def test_a_listing_that_says_more_but_gives_empty_pages_ends_with_our_error() -> None:
    """A new cursor every time with ``has_more`` and no rows would page forever."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        data = {"result": [], "count": 0, "next_cursor": f"c{calls['n']}", "has_more": True}
        return httpx.Response(200, json={"code": 0, "message": "SUCCEED", "request_id": "r", "data": data})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    kling = KlingClient(
        api_key=API_KEY, base_url="http://kling.test", http_client=http, retry=RetryPolicy.off()
    )
    with pytest.raises(errors.ServerError, match="empty page"):
        list(kling.task_pages())
    assert calls["n"] == 1
