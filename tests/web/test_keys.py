"""The keys view (``/api/keys``) over real HTTP on both ledger backends: what each virtual key
spent, what its budgets have left, its state and open tasks, read from the ledger."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from kling_cost.ledger import Ledger
from kling_cost.reports import key_rows
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock
from tests.ledger.conftest import clock, ledger, ledger_url
from tests.web.conftest import seed_keys

__all__ = ["clock", "ledger", "ledger_url"]


def test_api_keys_shows_spend_remaining_state_and_open_tasks(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_keys(ledger, clock)
    with serve(create_dashboard_app(ledger, now=clock)) as base:
        answer = httpx.get(f"{base}/api/keys")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    got = answer.json()
    assert got["generated_at"] == "2026-06-15T12:00:00+00:00"
    alice, bob, carol = got["keys"]

    assert (alice["name"], alice["scope"], alice["state"]) == ("alice", "key:alice", "active")
    assert alice["scopes"] == ["key:alice", "project:film"] and alice["unit"] == "units"
    assert alice["spend"] == [{"unit": "units", "all_time": "19.500", "charges": 2}]
    day, month = alice["budgets"]
    assert {k: day[k] for k in ("window", "window_key", "tz", "unit", "limit", "used", "reserved")} == {
        "window": "day",
        "window_key": "2026-06-15",
        "tz": "Europe/Paris",
        "unit": "units",
        "limit": "50.000",
        "used": "12.500",  # today's task in Paris; yesterday's 7 counts in the month only
        "reserved": "5.000",
    }
    assert (day["remaining"], day["percent"]) == ("32.500", "35.0")
    assert day["start"] == "2026-06-14T22:00:00+00:00"  # midnight in Paris
    assert (month["window"], month["window_key"], month["tz"]) == ("month", "2026-06", "UTC")
    assert (month["used"], month["reserved"], month["remaining"]) == ("19.500", "5.000", "175.500")
    # project:film (40 a day, 12.5 used + 5 held) leaves less than the key's own budgets
    assert alice["headroom"] == {
        "remaining": "22.500",
        "unit": "units",
        "scope": "project:film",
        "window": "day",
        "window_key": "2026-06-15",
        "tz": "UTC",
    }
    assert (alice["open_tasks"], alice["concurrency"]) == (1, 3)
    assert alice["last_used_at"] == "2026-06-15T09:00:00+00:00"
    assert alice["revoked_at"] is None and alice["expires_at"] is None

    assert (bob["state"], bob["revoked_at"]) == ("revoked", "2026-06-15T11:00:00+00:00")
    assert bob["spend"] == [{"unit": "units", "all_time": "20.000", "charges": 1}]
    (life,) = bob["budgets"]
    assert (life["window"], life["window_key"], life["start"], life["end"]) == (
        "lifetime",
        "lifetime",
        None,
        None,
    )
    assert (life["used"], life["reserved"], life["remaining"]) == ("20.000", "0.000", "10.000")
    assert bob["headroom"]["scope"] == "key:bob" and bob["headroom"]["remaining"] == "10.000"
    assert (bob["open_tasks"], bob["last_used_at"]) == (0, None)

    assert (carol["state"], carol["expires_at"]) == ("expired", "2026-06-14T12:00:00+00:00")
    assert carol["spend"] == [{"unit": "units", "all_time": "0.000", "charges": 0}]
    assert (carol["budgets"], carol["headroom"], carol["open_tasks"]) == ([], None, 0)

    # the same numbers as the ledger's own, and no secret anywhere
    usages = {(u.scope, u.budget.window): u for u in ledger.usages()}
    for row in got["keys"]:
        for b in row["budgets"]:
            u = usages[(row["scope"], b["window"])]
            assert (Decimal(b["used"]), Decimal(b["reserved"]), Decimal(b["remaining"])) == (
                u.used,
                u.reserved,
                u.remaining,
            )
        spent = sum(c.actual for c in ledger.charges() if row["scope"] in c.scopes)
        assert Decimal(row["spend"][0]["all_time"]) == spent
    text, records = answer.text, ledger.proxy.keys()
    for record in records:
        assert record.api_key_hash not in text and record.salt not in text and record.access_key not in text


def test_settling_and_a_credits_key_show_up_at_once(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_keys(ledger, clock)
    from kling_cost.proxy.keys import Keys, MasterKey

    dave = Keys(ledger, MasterKey(b"x" * 32, "test")).create("dave", unit="credits").record
    ledger.commit(ledger.reserve("2", ["key:dave"]), "2")  # units on the same scope, never added
    ledger.set_budget("key:dave", 100, "week", unit="credits")
    ledger.commit(ledger.reserve("30", ["key:dave"], unit="credits"), "25")
    open_task = ledger.get_reservation("a-open")
    assert open_task is not None
    ledger.commit(open_task, "4")
    with serve(create_dashboard_app(ledger, now=clock)) as base:
        rows = {k["name"]: k for k in httpx.get(f"{base}/api/keys").json()["keys"]}
    assert rows["alice"]["open_tasks"] == 0
    assert rows["alice"]["spend"][0]["all_time"] == "23.500"
    assert [(b["window"], b["used"], b["reserved"]) for b in rows["alice"]["budgets"]] == [
        ("day", "16.500", "0.000"),
        ("month", "23.500", "0.000"),
    ]
    assert rows["dave"]["unit"] == "credits"
    assert rows["dave"]["spend"] == [
        {"unit": "credits", "all_time": "25.000", "charges": 1},
        {"unit": "units", "all_time": "2.000", "charges": 1},
    ]
    (week,) = rows["dave"]["budgets"]
    assert (week["window_key"], week["unit"], week["remaining"]) == ("2026-W25", "credits", "75.000")
    assert rows["dave"]["headroom"]["remaining"] == "75.000"
    assert dave.scope == rows["dave"]["scope"]


def test_keys_view_of_a_ledger_without_keys(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    assert key_rows(ledger) == []
    with serve(create_dashboard_app(ledger, now=clock)) as base:
        assert httpx.get(f"{base}/api/keys").json() == {
            "generated_at": "2026-06-15T12:00:00+00:00",
            "keys": [],
        }


def test_api_keys_needs_the_token_like_every_api(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_keys(ledger, clock)
    with serve(create_dashboard_app(ledger, token="s3cret", bound_host="10.1.2.3")) as base:
        assert httpx.get(f"{base}/api/keys").status_code == 401
        assert httpx.get(f"{base}/api/keys?token=nope").status_code == 401
        ok = httpx.get(f"{base}/api/keys", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and len(ok.json()["keys"]) == 3
        assert httpx.get(f"{base}/api/keys", headers={"Host": "evil.example"}).status_code == 421
        spec = httpx.get(f"{base}/api/openapi.json?token=s3cret").json()
    keys = spec["paths"]["/api/keys"]["get"]
    assert keys["security"] == spec["paths"]["/api/budgets"]["get"]["security"]
    schema = keys["responses"]["200"]["content"]["application/json"]["schema"]
    item = schema["properties"]["keys"]["items"]["properties"]
    assert {"name", "state", "scopes", "spend", "budgets", "headroom", "open_tasks", "last_used_at"} <= set(
        item
    )
