"""At a glance (today against yesterday, costliest prompts, closest budget) and the favicon,
over real HTTP, on both backends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from kling_cost.ledger import Ledger
from kling_cost.reports import closest_budget, glance
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock
from tests.ledger.conftest import clock, ledger, ledger_url
from tests.reports.seeds import seed_glance, seed_mixed

__all__ = ["clock", "ledger", "ledger_url"]


def spent_on(ledger: Ledger, day: str, tz: str, unit: str) -> Decimal:
    """What the charges of one local day cost, summed in Python from the raw rows."""
    zone = ZoneInfo(tz)
    return sum(
        (
            c.actual
            for c in ledger.charges()
            if c.unit == unit and c.created_at.astimezone(zone).date().isoformat() == day
        ),
        Decimal(0),
    )


def test_glance_api_today_yesterday_prompts_and_closest(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_glance(ledger, clock)
    with serve(create_dashboard_app(ledger)) as base:
        g = httpx.get(f"{base}/api/glance").json()
        assert (g["today"], g["yesterday"], g["tz"], g["days"]) == ("2026-06-15", "2026-06-14", "UTC", 30)
        (units,) = g["spend"]
        assert units == {
            "unit": "units",
            "today": "25.000",
            "yesterday": "32.725",
            "change": "-7.725",
            "change_pct": "-23.6",
            "today_charges": 5,
            "yesterday_charges": 4,
        }
        assert Decimal(units["today"]) == spent_on(ledger, "2026-06-15", "UTC", "units")
        assert Decimal(units["yesterday"]) == spent_on(ledger, "2026-06-14", "UTC", "units")
        assert [
            (p["prompt_preview"], p["actual"], p["unit"], p["charges"], p["models"]) for p in g["top_prompts"]
        ] == [
            ("a red fox runs through snow", "35.000", "units", 2, ["kling-v2-1", "kling-v1-6"]),
            ("dragon over the mountains", "20.000", "units", 1, ["kling-v2-6"]),
            ("city at night, rain", "12.500", "units", 1, ["kling-v2-1"]),
            ("product shot of a shoe", "10.000", "units", 4, ["kling-v1-6"]),
            ("logo sketch", "0.125", "units", 1, ["kling-v1"]),
        ]
        closest = g["closest_budget"]
        assert (closest["scope"], closest["window"], closest["unit"], closest["percent"]) == (
            "project:ads",
            "day",
            "units",
            "83.3",
        )
        assert (closest["used"], closest["limit"], closest["remaining"]) == ("5.000", "6.000", "1.000")
        # The days are the dashboard's zone: in Tokyo it is already 2026-06-16 (01:00).
        tokyo = httpx.get(f"{base}/api/glance", params={"tz": "Asia/Tokyo", "days": "3"}).json()
        assert (tokyo["today"], tokyo["yesterday"], tokyo["days"]) == ("2026-06-16", "2026-06-15", 3)
        (t,) = tokyo["spend"]
        assert Decimal(t["today"]) == spent_on(ledger, "2026-06-16", "Asia/Tokyo", "units") == 0
        assert Decimal(t["yesterday"]) == spent_on(ledger, "2026-06-15", "Asia/Tokyo", "units")
        # The last 3 Tokyo days start 2026-06-14 00:00 +09:00: the 06-03 and 06-10 charges are out.
        assert [p["prompt_preview"] for p in tokyo["top_prompts"]][:2] == [
            "dragon over the mountains",
            "a red fox runs through snow",
        ]
        assert tokyo["top_prompts"][1]["actual"] == "20.000"
        for bad in ({"days": "0"}, {"days": "x"}, {"tz": "Mars/Olympus"}):
            got = httpx.get(f"{base}/api/glance", params=bad)
            assert got.status_code == 400 and got.json()["error"]
        spec = httpx.get(f"{base}/api/openapi.json").json()
        assert "closest" in spec["paths"]["/api/glance"]["get"]["summary"]


def test_glance_keeps_units_apart_and_an_empty_ledger_shows_zeros(ledger: Ledger, clock: FakeClock) -> None:
    empty = glance(ledger).to_dict()
    assert empty["spend"] == [
        {
            "unit": "units",
            "today": "0.000",
            "yesterday": "0.000",
            "change": "0.000",
            "change_pct": None,
            "today_charges": 0,
            "yesterday_charges": 0,
        }
    ]
    assert empty["top_prompts"] == [] and empty["closest_budget"] is None
    seed_mixed(ledger, clock)
    g = glance(ledger, days=2).to_dict()
    assert [(s["unit"], s["today"], s["yesterday"]) for s in g["spend"]] == [
        ("units", "3.000", "3.000"),
        ("credits", "70.000", "70.000"),
    ]
    assert [(p["unit"], p["actual"]) for p in g["top_prompts"]] == [
        ("units", "3.000"),
        ("units", "3.000"),
        ("credits", "70.000"),
        ("credits", "70.000"),
    ]
    assert (g["closest_budget"]["scope"], g["closest_budget"]["unit"]) == ("project:film", "credits")
    # The most used share wins whatever the order; the first of equals wins.
    ledger.set_budget("project:b", 100, "day")
    ledger.set_budget("project:a", 100, "day")
    usages = {u.scope: u for u in ledger.usages()}
    assert closest_budget([]) is None
    for order in (("project:a", "project:api", "project:b"), ("project:api", "project:b", "project:a")):
        pick = closest_budget([usages[s] for s in order])
        assert pick is not None and pick.scope == "project:api"
    pick = closest_budget([usages["project:b"], usages["project:a"]])
    assert pick is not None and pick.scope == "project:b"
    clock.advance(days=1)  # a new day: today is empty, yesterday is what today was
    moved = glance(ledger).to_dict()
    assert [
        (s["unit"], s["today"], s["yesterday"], s["change"], s["change_pct"]) for s in moved["spend"]
    ] == [
        ("units", "0.000", "3.000", "-3.000", "-100.0"),
        ("credits", "0.000", "70.000", "-70.000", "-100.0"),
    ]
    assert moved["today"] == (datetime(2026, 6, 16, tzinfo=UTC).date().isoformat())


def test_favicon_is_served_not_a_404(known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        ico = httpx.get(f"{base}/favicon.ico")
        assert ico.status_code == 200 and ico.headers["content-type"] == "image/x-icon"
        assert ico.content[:4] == b"\x00\x00\x01\x00" and b"PNG" in ico.content  # an ICO of PNGs
        svg = httpx.get(f"{base}/static/favicon.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        page = httpx.get(f"{base}/").text
        assert 'rel="icon" href="static/favicon.svg"' in page and 'href="favicon.ico"' in page
    with serve(create_dashboard_app(ledger, token="t", bound_host="0.0.0.0")) as base:
        assert httpx.get(f"{base}/favicon.ico").status_code == 401  # the token rule holds for it too
        assert httpx.get(f"{base}/favicon.ico", headers={"Authorization": "Bearer t"}).status_code == 200
