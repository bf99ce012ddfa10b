"""The rollup on both backends: kept by every settle, backfilled for old ledgers, copied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.errors import ValidationError
from kling_cost.ledger import Ledger, copy_ledger, open_ledger
from kling_cost.reports import daily_usage, overview, report
from tests.helpers import FakeClock


def seed(ledger: Ledger, clock: FakeClock) -> None:
    clock.set(datetime(2026, 6, 14, 23, 30, tzinfo=UTC))
    ledger.set_budget("account", 100, "day")
    for i in range(6):
        meta = {"model": "kling-v2-1" if i % 2 else "kling-v1-6", "mode": "pro", "prompt": f"p{i}"}
        res = ledger.reserve("10", ["project:film" if i < 4 else "project:ads", "key:k1"], metadata=meta)
        if i == 5:
            ledger.attach_task(res, "t5")
            ledger.release(res)
        else:
            ledger.commit(res, "9.5", task_id=f"t{i}")
        clock.advance(hours=1)
    ledger.record_cache_hit("7", ["project:film"], metadata={"model": "kling-v1-6", "mode": "std"})


def test_rollup_reports_equal_raw_on_both_backends(ledger: Ledger, clock: FakeClock) -> None:
    seed(ledger, clock)
    for by in ("day,model", "project", "status", "week,mode", "key,model"):
        for tz in ("UTC", "Asia/Tokyo"):
            fast = report(ledger, by, tz=tz, source="rollup")
            slow = report(ledger, by, tz=tz, source="charges")
            assert fast.rows == slow.rows and fast.totals == slow.totals
    rep = report(ledger, "status")
    by_status = {r.key["status"]: r for r in rep.rows}
    assert by_status["succeeded"].actual == Decimal("47.500") and by_status["succeeded"].drift == Decimal(
        "-2.5"
    )
    assert by_status["failed"].refunded == Decimal("10") and by_status["failed"].actual == 0
    assert by_status["cache_hit"].saved == Decimal("7")
    assert [(t.unit, t.charges) for t in rep.totals] == [("units", 7)]
    days = {r.key["day"]: r.actual for r in report(ledger, "day", tz="UTC").rows}
    assert days == {"2026-06-14": Decimal("9.5"), "2026-06-15": Decimal("38")}


def test_daily_usage_and_overview(ledger: Ledger, clock: FakeClock) -> None:
    seed(ledger, clock)
    daily = daily_usage(ledger, 3)
    assert [r.key["day"] for r in daily.days] == ["2026-06-13", "2026-06-14", "2026-06-15"]
    assert [r.actual for r in daily.days] == [0, Decimal("9.5"), Decimal("38")]
    assert (daily.limit, daily.unit, daily.units) == (Decimal("100"), "units", ("units",))
    assert {r.unit for r in daily.days} == {"units"}
    ov = overview(ledger, days=30)
    (budget,) = ov["budgets"]
    assert (budget["used"], budget["remaining"], budget["marks"]) == (
        "38.000",
        "62.000",
        ["50.000", "80.000", "100.000"],
    )
    assert [(t["unit"], t["actual"]) for t in ov["totals"]] == [("units", "47.500")]
    assert budget["unit"] == "units" and ov["daily"]["unit"] == "units"


def test_rollup_only_when_exact(ledger: Ledger, clock: FakeClock) -> None:
    seed(ledger, clock)
    assert report(ledger, "day", tz="Asia/Kolkata").source == "charges"
    assert report(ledger, "duration").source == "charges"
    assert report(ledger, "project", scope="key:k1").source == "charges"
    assert report(ledger, "model", since=datetime(2026, 6, 15, 0, 30, tzinfo=UTC)).source == "charges"
    with pytest.raises(ValidationError):
        report(ledger, "duration", source="rollup")
    with pytest.raises(ValidationError, match="cannot group by"):
        report(ledger, "colour")
    with pytest.raises(ValidationError, match="unknown"):
        report(ledger, "day", tz="Mars/Base")


def test_old_ledgers_are_backfilled_once(tmp_path: Path) -> None:
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'old.db'}"
    led = open_ledger(url, clock=clock)
    led.hooks.clear()  # a ledger written before the rollup existed
    seed(led, clock)
    with led.transaction() as cur:
        cur.execute("DELETE FROM report_rollup")
        cur.execute("UPDATE charges SET rollup_deferred = 0")  # as every charge then: none waits for a fold
        cur.execute("UPDATE report_rollup_meta SET value = 0 WHERE name = 'folded_upto'")
        cur.execute(
            "INSERT INTO report_rollup_meta (name, value) SELECT 'backfill_upto', MAX(id) FROM charges"
        )
    led.close()
    again = open_ledger(url, clock=clock)
    try:
        fast = report(again, "day,model", source="rollup")
        assert fast.rows == report(again, "day,model", source="charges").rows
        assert fast.total_for("units").actual == Decimal("47.500")
        assert report(again, (), source="rollup").totals == fast.totals  # not added twice
    finally:
        again.close()


def test_copy_keeps_the_rollup(tmp_path: Path) -> None:
    clock = FakeClock()
    src = open_ledger(f"sqlite:///{tmp_path / 'a.db'}", clock=clock)
    dst = open_ledger(f"sqlite:///{tmp_path / 'b.db'}", clock=clock)
    try:
        seed(src, clock)
        src.rollup.fold()  # most of the charges are in the rollup, the last ones wait for a fold
        clock.advance(minutes=5)
        src.commit(src.reserve("2", ["project:film"]), "2")
        result = copy_ledger(src, dst)
        assert result.rows["report_rollup"] > 0 and result.rows["charges"] > 1
        with dst.transaction() as cur:  # handed over: the target folds it, once
            cur.execute("SELECT charge_id FROM rollup_pending")
            assert [r[0] for r in cur.fetchall()] == [result.rows["charges"]]
        assert report(dst, "day,project", source="rollup").rows == report(src, "day,project").rows
        clock.advance(hours=1)
        dst.commit(dst.reserve("1", ["project:film"]))
        assert report(dst, (), source="rollup").total_for("units").actual == Decimal("50.500")
        assert report(src, (), source="rollup").total_for("units").actual == Decimal("49.500")
    finally:
        src.close()
        dst.close()


def test_dst_day_in_new_york_reads_the_rollup(ledger: Ledger, clock: FakeClock) -> None:
    clock.set(datetime(2026, 3, 8, 4, 0, tzinfo=UTC))  # 23:00 on 7 March in New York (EST)
    for _ in range(30):
        ledger.commit(ledger.reserve("1", ["project:a"]))
        clock.advance(hours=1)
    rep = report(ledger, "day", tz="America/New_York", since="2026-03-07", until="2026-03-09")
    assert rep.source == "rollup"
    days = {r.key["day"]: r.charges for r in rep.rows}
    assert days == {"2026-03-07": 1, "2026-03-08": 23, "2026-03-09": 6}
    assert clock() - timedelta(hours=30) == datetime(2026, 3, 8, 4, 0, tzinfo=UTC)
