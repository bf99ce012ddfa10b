"""The bill view (``/api/bill``) over real HTTP on both ledger backends: the projection of each
budget with the line the daily chart draws, the stored packs snapshot with the units at risk,
the last reconciliation run with its differences."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from kling_cost.bill.forecast import forecast
from kling_cost.ledger import Ledger
from kling_cost.ledger.runs_store import BillDifference
from kling_cost.reports.bill import MAX_DIFFERENCES, bill_view
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock
from tests.ledger.conftest import clock, ledger, ledger_url
from tests.web.conftest import BILL_NOW, seed_bill

__all__ = ["clock", "ledger", "ledger_url"]


def test_api_bill_projection_packs_and_reconciliation(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_bill(ledger, clock)
    with serve(create_dashboard_app(ledger, now=clock)) as base:
        answer = httpx.get(f"{base}/api/bill", params={"tz": "Europe/Paris"})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    got = answer.json()
    assert (got["generated_at"], got["tz"]) == ("2026-06-15T12:00:00+00:00", "Europe/Paris")
    assert got["now_local"] == "2026-06-15T14:00:00"  # Paris wall time, what the chart's axis reads

    # The forecast: 60 units in 12 h = 5 an hour, 12 h left: 120 of 100 by midnight, out at 20:00.
    rows = {(p["scope"], p["window"]): p for p in got["forecast"]["projections"]}
    day = rows[("account", "day")]
    assert {k: day[k] for k in ("limit", "used", "reserved", "level", "rate_per_hour", "projected")} == {
        "limit": "100.000",
        "used": "60.000",
        "reserved": "0.000",
        "level": "60.000",
        "rate_per_hour": "5.000",
        "projected": "120.000",
    }
    assert (day["runs_out_at"], day["horizon"], day["over"], day["reason"]) == (
        "2026-06-15T20:00:00+00:00",
        "2026-06-16T00:00:00+00:00",
        True,
        None,
    )
    assert day["points"] == [
        {"at": "2026-06-15T12:00:00+00:00", "local": "2026-06-15T14:00:00", "value": "60.000"},
        {"at": "2026-06-15T20:00:00+00:00", "local": "2026-06-15T22:00:00", "value": "100.000"},
        {"at": "2026-06-16T00:00:00+00:00", "local": "2026-06-16T02:00:00", "value": "120.000"},
    ]
    month = rows[("project:film", "month")]
    # 60 units in the last 24 h of the month's window: 2.5 an hour until July 1st (15 days 12 h)
    assert (month["rate_per_hour"], month["projected"]) == ("2.500", "990.000")
    assert [p["value"] for p in month["points"]] == ["60.000", "990.000"]  # never runs out
    # the same numbers as the library's
    for p in forecast(ledger, BILL_NOW):
        row = rows[(p.budget.scope, p.budget.window)]
        assert row["projected"] == (None if p.projected is None else str(p.projected))

    # The packs: the stored snapshot, soonest expiry first, the units at risk at 10 a day.
    packs = got["packs"]
    assert packs["taken_at"] == "2026-06-15T11:00:00+00:00"
    assert "12 h" in packs["note"] and packs["burn_per_day"]["video"] == "10.000"
    assert [(p["name"], p["status"], p["remaining"], p["units_at_risk"]) for p in packs["packs"]] == [
        ("image old", "expired", "7", "0.000"),
        ("video A", "online", "50", "20.000"),
        ("video B", "online", "100", "50.000"),
    ]
    a = packs["packs"][1]
    assert (a["pack_type"], a["total"], a["days_left"]) == ("video", "1000", "3.00")
    assert Decimal(a["usd_left"]) == Decimal(50) * Decimal("0.14")
    assert (a["effective_time"], a["invalid_time"]) == (
        "2026-05-16T12:00:00+00:00",
        "2026-06-18T12:00:00+00:00",
    )
    assert (a["start_local"], a["end_local"]) == ("2026-05-16T14:00:00", "2026-06-18T14:00:00")
    assert a["span_ms"] == 33 * 86_400_000
    assert packs["packs"][0]["units_lost"] == "7"

    # The last reconciliation: when, the period, the counts and the differences in order.
    rec = got["reconciliation"]
    assert (rec["kind"], rec["status"], rec["clean"], rec["fixed"]) == ("reconcile", "differences", False, 0)
    assert (rec["since"], rec["until"]) == ("2026-06-08T12:00:00+00:00", "2026-06-15T12:00:00+00:00")
    assert rec["started_at"] == "2026-06-15T12:00:00+00:00"
    assert rec["counts"] == {
        "matched": 4,
        "amount_differs": 1,
        "unknown_to_ledger": 1,
        "not_billed": 1,
        "other_unit": 0,
    }
    assert rec["summary"]["by_pack"] == {"video": {"ledger": "90.000", "kling": "120.000"}}
    assert rec["differences_total"] == 3
    assert [(d["category"], d["task_id"], d["ledger"], d["kling"]) for d in rec["differences"]] == [
        ("unknown_to_ledger", "task-bypass", None, "35.000"),
        ("amount_differs", "task-4", "15.000", "20.000"),
        ("not_billed", "task-7", "15.000", None),
    ]
    assert (rec["differences"][0]["api_key_name"], rec["differences"][0]["model"]) == (
        "intern-laptop",
        "kling-v2-6",
    )


def test_api_bill_before_any_snapshot_or_run(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    ledger.set_budget("account", 100, "day")
    ledger.commit(ledger.reserve("10", []), "10")
    clock.advance(minutes=1)
    with serve(create_dashboard_app(ledger, now=clock)) as base:
        got = httpx.get(f"{base}/api/bill").json()
    assert got["packs"] is None and got["reconciliation"] is None
    (day,) = got["forecast"]["projections"]
    assert day["projected"] is None and day["points"] == []
    assert day["reason"].startswith("not enough data yet: 1 charge(s) or hold(s)")
    assert "3 charges or holds" in got["forecast"]["rule"]


def test_only_the_first_differences_are_listed(ledger: Ledger, clock: FakeClock) -> None:
    many = [
        BillDifference("not_billed", task_id=f"t-{i:03d}", unit="units", ledger_amount=Decimal(1))
        for i in range(MAX_DIFFERENCES + 7)
    ]
    ledger.runs.record(
        "reconcile",
        since=clock() - timedelta(days=7),
        until=clock(),
        status="differences",
        summary={"counts": {"not_billed": len(many)}},
        differences=many,
    )
    rec = bill_view(ledger)["reconciliation"]
    assert rec["differences_total"] == 57 and len(rec["differences"]) == 50
    assert rec["differences"][-1]["task_id"] == "t-049"


def test_api_bill_needs_the_token_and_a_known_host(
    ledger: Ledger, clock: FakeClock, serve: Callable[[Any], Any]
) -> None:
    seed_bill(ledger, clock)
    with serve(create_dashboard_app(ledger, token="s3cret", bound_host="10.1.2.3", now=clock)) as base:
        assert httpx.get(f"{base}/api/bill").status_code == 401
        ok = httpx.get(f"{base}/api/bill", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["packs"] is not None
        assert httpx.get(f"{base}/api/bill", headers={"Host": "evil.example"}).status_code == 421
        assert httpx.get(f"{base}/api/bill?tz=Nowhere/Land&token=s3cret").status_code == 400
        spec = httpx.get(f"{base}/api/openapi.json?token=s3cret").json()
    bill = spec["paths"]["/api/bill"]["get"]
    assert bill["security"] == spec["paths"]["/api/keys"]["get"]["security"]
    schema = bill["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert {"forecast", "packs", "reconciliation", "now_local"} <= set(schema)
