"""The JSON API over real HTTP, and who may read it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from kling_cost.ledger import Ledger, open_ledger
from kling_cost.web import create_dashboard_app, is_loopback
from tests.helpers import FakeClock
from tests.ledger.conftest import clock, ledger, ledger_url
from tests.reports.seeds import seed_mixed
from tests.web.conftest import seed

__all__ = ["clock", "ledger", "ledger_url"]


def test_api_numbers_equal_the_ledger(known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        ov = httpx.get(f"{base}/api/overview").json()
        usages = {(u.scope, u.budget.window): u for u in ledger.usages()}
        for b in ov["budgets"]:
            u = usages[(b["scope"], b["window"])]
            assert (Decimal(b["used"]), Decimal(b["reserved"]), Decimal(b["remaining"])) == (
                u.used,
                u.reserved,
                u.remaining,
            )
        charges = ledger.charges()
        (total,) = ov["totals"]
        assert total["unit"] == "units" and ov["units"] == ["units"]
        assert Decimal(total["actual"]) == sum(c.actual for c in charges)
        assert total["charges"] == len(charges)
        assert (ov["daily"]["limit"], ov["daily"]["unit"]) == ("200.000", "units")
        assert all(b["unit"] == "units" for b in ov["budgets"])
        assert [d["actual"] for d in ov["daily"]["days"][-2:]] == ["67.500", "67.500"]
        model = httpx.get(f"{base}/api/breakdown/project").json()
        assert {r["project"]: r["actual"] for r in model["rows"]} == {
            "project:ads": "25.000",
            "project:film": "110.000",
        }
        latest = httpx.get(f"{base}/api/charges?limit=2").json()["charges"]
        assert [c["status"] for c in latest] == ["cache_hit", "failed"]
        alerts = httpx.get(f"{base}/api/alerts").json()["alerts"]
        assert alerts[0]["scope"] == "key:alice" and alerts[0]["status"] == "pending"
        assert alerts[0]["unit"] == "units"
        drift = httpx.get(f"{base}/api/drift").json()["rows"]
        v16 = next(r for r in drift if r["model"] == "kling-v1-6" and r["mode"] == "std")
        assert (v16["drift"], v16["drift_pct"]) == ("5.000", "25.00")
        rep = httpx.get(f"{base}/api/report", params={"by": "day,model", "since": "2026-06-15"}).json()
        assert rep["source"] == "rollup" and len(rep["rows"]) == 2
        bad = httpx.get(f"{base}/api/report", params={"by": "colour"})
        assert bad.status_code == 400 and "cannot group by" in bad.json()["error"]
        spec = httpx.get(f"{base}/api/openapi.json").json()
        assert spec["openapi"].startswith("3.") and "/api/overview" in spec["paths"]
        js = httpx.get(f"{base}/static/plotly.min.js")
        assert js.status_code == 200 and len(js.content) > 1_000_000
        assert httpx.get(f"{base}/static/../dashboard.py").status_code == 404


def test_non_loopback_dashboard_needs_the_token(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]
) -> None:
    ledger, _ = known
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    with serve(create_dashboard_app(ledger, bound_host="0.0.0.0")) as base:  # no token at all
        for path in ("/", "/api/overview", "/api/openapi.json", "/static/plotly.min.js"):
            assert httpx.get(base + path).status_code == 401
        assert httpx.get(base + "/api/overview?token=anything").status_code == 401
    with serve(create_dashboard_app(ledger, token="s3cret", bound_host="10.1.2.3")) as base:
        assert httpx.get(f"{base}/api/overview").status_code == 401
        assert httpx.get(f"{base}/api/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = httpx.get(f"{base}/api/overview", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["budgets"]
        with httpx.Client(base_url=base) as browser:
            page = browser.get("/?token=s3cret")
            assert page.status_code == 200 and "kling_cost_token" in page.headers["set-cookie"]
            assert browser.get("/api/charges").status_code == 200  # the cookie carries it
    with serve(create_dashboard_app(ledger)) as base:  # loopback, no token: open
        assert httpx.get(f"{base}/api/budgets").status_code == 200


def test_api_gives_every_amount_its_unit_and_never_adds_units(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_mixed(ledger, clock)
    with serve(create_dashboard_app(ledger)) as base:
        ov = httpx.get(f"{base}/api/overview").json()
        assert ov["units"] == ["units", "credits"]
        assert [(t["unit"], t["actual"], t["charges"]) for t in ov["totals"]] == [
            ("units", "6.000", 3),
            ("credits", "140.000", 3),
        ]
        assert {(b["scope"], b["unit"]) for b in ov["budgets"]} == {
            ("project:film", "credits"),
            ("project:api", "units"),
        }
        daily = ov["daily"]
        assert daily["units"] == ["units", "credits"] and daily["unit"] is None
        assert [(d["day"], d["unit"], d["actual"]) for d in daily["days"][-2:]] == [
            ("2026-06-15", "units", "3.000"),
            ("2026-06-15", "credits", "70.000"),
        ]
        film = httpx.get(f"{base}/api/daily", params={"scope": "project:film", "days": 2}).json()
        assert (film["limit"], film["unit"], film["units"]) == ("100.000", "credits", ["credits"])
        keys = httpx.get(f"{base}/api/breakdown/key").json()
        assert [(r["key"], r["unit"], r["actual"]) for r in keys["rows"]] == [
            ("key:k1", "units", "6.000"),
            ("key:k1", "credits", "140.000"),
        ]
        assert [t["unit"] for t in keys["totals"]] == ["units", "credits"]
        drift = httpx.get(f"{base}/api/drift").json()
        assert {(r["model"], r["unit"]) for r in drift["rows"]} == {
            ("kling-v2-1", "units"),
            ("kling-v2-1", "credits"),
            ("kling-v1-6", "units"),
        }
        rep = httpx.get(f"{base}/api/report", params={"by": "status"}).json()
        assert {(r["status"], r["unit"]) for r in rep["rows"]} == {
            ("succeeded", "units"),
            ("cache_hit", "units"),
            ("succeeded", "credits"),
            ("failed", "credits"),
        }
        charges = httpx.get(f"{base}/api/charges").json()["charges"]
        assert {(c["task_id"], c["unit"]) for c in charges} >= {("film-15", "credits"), ("api-15", "units")}
        alerts = httpx.get(f"{base}/api/alerts").json()["alerts"]
        assert alerts and {(a["scope"], a["unit"]) for a in alerts} == {("project:film", "credits")}
        spec = httpx.get(f"{base}/api/openapi.json").json()
        assert "`unit` field" in spec["info"]["description"]


def test_row_limits_are_bounded_on_both_backends(ledger_url: str, serve: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    with open_ledger(ledger_url, clock=clock) as ledger:
        seed(ledger, clock)
        assert len(ledger.alerts()) >= 2
        with serve(create_dashboard_app(ledger)) as base:
            for path in ("/api/alerts", "/api/charges"):
                for bad in ("-1", "0", "1001", "many"):
                    got = httpx.get(f"{base}{path}", params={"limit": bad})
                    assert got.status_code == 400, (path, bad, got.text)
                    assert "limit must be" in got.json()["error"]
            assert len(httpx.get(f"{base}/api/alerts", params={"limit": "1"}).json()["alerts"]) == 1
            assert len(httpx.get(f"{base}/api/charges", params={"limit": "1"}).json()["charges"]) == 1


def test_a_report_period_out_of_range_is_400_not_500(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]
) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        for params in (
            {"since": "0001-01-01", "tz": "Europe/Paris"},
            {"since": "2026-01-01", "until": "9999-12-31", "tz": "Asia/Tokyo"},
            {"since": "0001-01-01T00:00:00-05:00"},
        ):
            got = httpx.get(f"{base}/api/report", params=params)
            assert got.status_code == 400, (params, got.text)
            assert "out of range" in got.json()["error"]
        ok = httpx.get(f"{base}/api/report", params={"since": "1970-01-01", "tz": "Europe/Paris"})
        assert ok.status_code == 200
        assert sum(t["charges"] for t in ok.json()["totals"]) == len(ledger.charges())
