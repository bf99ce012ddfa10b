"""The simulator's packs over real HTTP: several per type, paid in expiry order, units lost at
expiry, ``toBeOnline`` before the effective time, and ``/account/costs`` lagging on request."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx

from tests.bill.conftest import DAY, Bill
from tests.servers import API_KEY


def _http(bill: Bill) -> httpx.Client:
    return httpx.Client(base_url=bill.url, headers={"Authorization": f"Bearer {API_KEY}"})


def _data(answer: httpx.Response) -> Any:
    body = json.loads(answer.content, parse_float=Decimal)
    assert body["code"] == 0, body
    return body["data"]


def _video(http: httpx.Client) -> httpx.Response:
    """kling-v2-6 std 5 s: 1.5 units."""
    return http.post(
        "/v1/videos/text2video", json={"prompt": "p", "model_name": "kling-v2-6", "duration": "5"}
    )


def _costs(http: httpx.Client, bill: Bill) -> dict[str, dict[str, Any]]:
    now = bill.now_ms()
    data = _data(http.get("/account/costs", params={"start_time": now - 400 * DAY * 1000, "end_time": now}))
    return {p["resource_pack_name"]: p for p in data["resource_pack_subscribe_infos"]}


def test_tasks_pay_from_the_online_pack_that_expires_first_and_expiry_loses_units(bill: Bill) -> None:
    now = bill.now_ms()
    with _http(bill) as http:
        added = _data(
            http.post(
                "/_simulator/packs",
                json={
                    "pack_type": "video", "total": 10, "name": "late video",
                    "purchase_time": now, "effective_time": now, "invalid_time": now + 10 * DAY * 1000,
                },
            )
        )  # fmt: skip
        assert added["status"] == "online" and added["remaining_quantity"] == 10
        bill.sim.state.add_pack(
            "video",
            3,
            purchase_time=now,
            effective_time=now,
            invalid_time=now + 2 * DAY * 1000,
            name="soon video",
        )
        bill.sim.state.add_pack(
            "video",
            50,
            purchase_time=now,
            effective_time=now + DAY * 1000,
            invalid_time=now + 5 * DAY * 1000,
            name="future video",
        )
        first = _data(_video(http))["task_id"]
        bill.advance(11)
        packs = _costs(http, bill)
        assert packs["soon video"]["remaining_quantity"] == Decimal("1.5")  # the soonest pays
        assert packs["late video"]["remaining_quantity"] == 10
        assert packs["future video"]["status"] == "toBeOnline"
        assert packs["future video"]["remaining_quantity"] == 50  # not yet usable
        [row] = bill.sim.state.accounts.charges
        assert row.task_id == first and row.package_name == "soon video"

        # 2 days later the soon pack expires: its 1.5 units are lost, the next pays.
        bill.advance(2 * DAY)
        packs = _costs(http, bill)
        assert packs["soon video"]["status"] == "expired"
        assert packs["soon video"]["remaining_quantity"] == Decimal("1.5")  # shown, but pays nothing
        assert packs["future video"]["status"] == "online"
        _data(_video(http))
        bill.advance(11)
        packs = _costs(http, bill)
        assert packs["soon video"]["remaining_quantity"] == Decimal("1.5")
        assert packs["future video"]["remaining_quantity"] == Decimal("48.5")  # expires before "late"
        assert packs["late video"]["remaining_quantity"] == 10

        # Every pack past its expiry (the default one is empty): 1102, what they held is lost.
        bill.advance(9 * DAY)
        answer = _video(http)
        assert answer.status_code == 429 and answer.json()["code"] == 1102
        packs = _costs(http, bill)
        assert {packs[n]["status"] for n in ("soon video", "future video", "late video")} == {"expired"}


def test_a_task_is_not_split_a_pack_too_small_is_skipped(bill: Bill) -> None:
    now = bill.now_ms()
    state = bill.sim.state
    state.add_pack("video", 1, purchase_time=now, effective_time=now, invalid_time=now + DAY * 1000, name="a")
    state.add_pack(
        "video", 5, purchase_time=now, effective_time=now, invalid_time=now + 3 * DAY * 1000, name="b"
    )
    with _http(bill) as http:
        _data(_video(http))
        bill.advance(11)
        packs = _costs(http, bill)
    assert packs["a"]["remaining_quantity"] == 1 and packs["b"]["remaining_quantity"] == Decimal("3.5")


def test_the_old_admin_route_still_sets_the_default_pack(bill: Bill) -> None:
    with _http(bill) as http:
        data = _data(http.post("/_simulator/packs/video", json={"remaining": "7"}))
        assert data == {"pack": "video", "remaining": 7}
        bad = http.post("/_simulator/packs", json={"pack_type": "audio", "total": 1})
        assert bad.json()["code"] == 1201
        now = bill.now_ms()
        wrong_order = http.post(
            "/_simulator/packs",
            json={
                "pack_type": "image",
                "total": 1,
                "purchase_time": now,
                "effective_time": now,
                "invalid_time": now,
            },
        )
        assert (
            wrong_order.json()["code"] == 1201
            and "effective_time < invalid_time" in wrong_order.json()["message"]
        )


def test_costs_lag_behind_while_deductions_and_the_bill_are_timely(lagging: Bill) -> None:
    bill = lagging
    with _http(bill) as http:
        task = _data(_video(http))["task_id"]
        bill.advance(11)
        done = _data(http.get(f"/v1/videos/text2video/{task}"))
        assert done["task_status"] == "succeed" and Decimal(done["final_unit_deduction"]) == Decimal("1.5")
        assert bill.sim.state.packs["video"].remaining == Decimal("98.5")  # Kling's truth
        rows = _data(http.post("/account/billing/package", json={}))
        [row] = rows["result"]
        assert Decimal(str(row["unit_after_deduction"])) == Decimal("98.5")
        assert _costs(http, bill)["video pack"]["remaining_quantity"] == 100  # 12 h behind
        bill.advance(12 * 3600 - 5)
        assert _costs(http, bill)["video pack"]["remaining_quantity"] == 100
        bill.advance(10)
        assert _costs(http, bill)["video pack"]["remaining_quantity"] == Decimal("98.5")
