"""Reports over a ledger holding charges in units and in credits: every amount carries its
unit, and amounts of different units are never added together (both backends)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kling_cost.errors import StorageError, ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.rollup import rollup_values
from kling_cost.reports import daily_usage, export_charges, latest_charges, overview, report
from tests.helpers import FakeClock
from tests.reports.seeds import seed_mixed
from tests.reports.test_rollup_read import rerun_migrations

SUMS = "s_n, s_est, s_act, f_n, f_est, f_act, c_n, c_est, c_act"


def totals(rep: object) -> dict[str, tuple[int, Decimal, Decimal, Decimal, Decimal]]:
    return {
        t.unit: (t.charges, t.estimate, t.actual, t.refunded, t.saved)
        for t in rep.totals  # type: ignore[attr-defined]
    }


def test_two_units_give_two_labelled_totals_never_one_sum(ledger: Ledger, clock: FakeClock) -> None:
    seed_mixed(ledger, clock)
    for source in ("rollup", "charges"):
        rep = report(ledger, (), since="30d", source=source)
        assert rep.units == ("units", "credits")
        assert totals(rep) == {
            "units": (3, Decimal("5"), Decimal("6"), Decimal("0"), Decimal("1.5")),
            "credits": (3, Decimal("140"), Decimal("140"), Decimal("25"), Decimal("0")),
        }
        data = rep.to_dict()
        assert [(t["unit"], t["actual"]) for t in data["totals"]] == [
            ("units", "6.000"),
            ("credits", "140.000"),
        ]
        assert all(r["unit"] in ("units", "credits") for r in data["rows"])
        assert "total" not in data  # no single total that would add units to credits
    # key:k1 spent in both units: two rows, each in its own unit.
    rep = report(ledger, "key", since="30d")
    assert rep.source == "rollup"
    assert [(r.key["key"], r.unit, r.actual) for r in rep.rows] == [
        ("key:k1", "units", Decimal("6")),
        ("key:k1", "credits", Decimal("140")),
    ]
    assert totals(rep)["credits"][0] == 3 and totals(rep)["units"][0] == 3
    days = report(ledger, "day,model", since="30d")
    assert [(r.key["day"], r.unit, r.actual) for r in days.rows if r.key["model"] == "kling-v2-1"] == [
        ("2026-06-14", "units", Decimal("3")),
        ("2026-06-14", "credits", Decimal("70")),
        ("2026-06-15", "units", Decimal("3")),
        ("2026-06-15", "credits", Decimal("70")),
    ]
    assert report(ledger, (), since="30d").total_for("credits").actual == Decimal("140")
    assert report(ledger, (), scope="project:api").total_for("credits").charges == 0
    with pytest.raises(ValidationError, match="unit 'dollars' is unknown"):
        report(ledger, ()).total_for("dollars")


@pytest.mark.parametrize(
    "by", ["day", "week,status", "month,model", "model,mode", "project", "key,model", "scope", "status"]
)
def test_rollup_equals_raw_charges_per_unit(ledger: Ledger, clock: FakeClock, by: str) -> None:
    seed_mixed(ledger, clock)
    for tz in ("UTC", "Europe/Paris", "America/New_York"):
        fast = report(ledger, by, tz=tz, since="30d", source="rollup")
        slow = report(ledger, by, tz=tz, since="30d", source="charges")
        assert fast.rows == slow.rows and fast.totals == slow.totals, (by, tz)
        assert {r.unit for r in fast.rows} == {"units", "credits"}


def test_daily_usage_has_one_series_per_unit_and_the_limit_in_its_unit(
    ledger: Ledger, clock: FakeClock
) -> None:
    seed_mixed(ledger, clock)
    daily = daily_usage(ledger, 3)
    assert daily.units == ("units", "credits") and (daily.limit, daily.unit) == (None, None)
    assert [(r.key["day"], r.actual) for r in daily.series("credits")] == [
        ("2026-06-13", 0),
        ("2026-06-14", Decimal("70")),
        ("2026-06-15", Decimal("70")),
    ]
    assert [r.actual for r in daily.series("units")] == [0, Decimal("3"), Decimal("3")]
    film = daily_usage(ledger, 2, scope="project:film")
    assert (film.limit, film.unit, film.units) == (Decimal("100"), "credits", ("credits",))
    assert film.to_dict()["unit"] == "credits"
    assert {d["unit"] for d in film.to_dict()["days"]} == {"credits"}
    ledger.set_budget("project:empty", 5, "day", unit="credits")
    empty = daily_usage(ledger, 2, scope="project:empty")  # no charges: the budget's unit
    assert empty.units == ("credits",) and [r.unit for r in empty.days] == ["credits", "credits"]
    assert daily_usage(ledger, 1, scope="project:nothing").units == ("units",)


def test_overview_totals_and_budgets_carry_their_unit(ledger: Ledger, clock: FakeClock) -> None:
    seed_mixed(ledger, clock)
    ov = overview(ledger, days=30)
    assert ov["units"] == ["units", "credits"]
    assert [(t["unit"], t["actual"], t["refunded"]) for t in ov["totals"]] == [
        ("units", "6.000", "0.000"),
        ("credits", "140.000", "25.000"),
    ]
    assert {(b["scope"], b["unit"], b["used"]) for b in ov["budgets"]} == {
        ("project:film", "credits", "70.000"),
        ("project:api", "units", "3.000"),
    }
    latest = latest_charges(ledger, 10)
    assert {(c.task_id, c.unit) for c in latest} >= {("film-15", "credits"), ("api-15", "units")}


def test_exports_have_a_unit_column(ledger: Ledger, clock: FakeClock) -> None:
    seed_mixed(ledger, clock)
    out = io.StringIO()
    assert export_charges(ledger, out, "jsonl") == 6
    lines = [json.loads(line, parse_float=Decimal) for line in out.getvalue().splitlines()]
    assert [(line["task_id"], line["credits"], line["unit"]) for line in lines[:2]] == [
        ("film-14", 70, "credits"),
        ("api-14", 3, "units"),
    ]
    assert (lines[0]["catalog"], lines[0]["catalog_date"]) == ("kling-app-credits", "2026-04-23")
    out = io.StringIO()
    export_charges(ledger, out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    header = out.getvalue().splitlines()[0].split(",")
    assert header.index("unit") == header.index("credits") + 1
    spent: dict[str, Decimal] = {}
    for row in rows:
        spent[row["unit"]] = spent.get(row["unit"], Decimal(0)) + Decimal(row["credits"])
    assert spent == {"credits": Decimal("140"), "units": Decimal("6")}


def test_the_rollup_refuses_an_unknown_unit() -> None:
    with pytest.raises(StorageError, match="unit 'dollars'"):
        rollup_values("succeeded", 0, 1, 1, None, None, "dollars")


def _back_to_schema_7(ledger: Ledger) -> None:
    """The rollup as it was before migration 8: no unit, so every unit summed in one row."""
    ledger.rollup.fold()  # PostgreSQL's charges wait for a fold until a report reads
    with ledger.transaction() as cur:
        cur.execute(
            "CREATE TABLE report_rollup_v7 AS SELECT scope, grain, bucket, model, mode, "
            + ", ".join(f"SUM({c}) AS {c}" for c in SUMS.split(", "))
            + " FROM report_rollup GROUP BY scope, grain, bucket, model, mode"
        )
        cur.execute("DROP TABLE report_rollup")
        cur.execute("ALTER TABLE report_rollup_v7 RENAME TO report_rollup")


def test_migration_8_keeps_the_rows_of_a_units_ledger_as_units(
    ledger_url: str, ledger: Ledger, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 6, 14, 9, 0, tzinfo=UTC))
    ledger.set_budget("account", 100, "day")
    for _ in range(5):
        ledger.commit(ledger.reserve(2, ["project:a"], metadata={"model": "kling-v2-1"}), "1.5")
        clock.advance(hours=7)
    _back_to_schema_7(ledger)
    with ledger.transaction() as cur:
        cur.execute("DELETE FROM charges")  # proof that the rows are kept, not rebuilt
    rerun_migrations(ledger, 8, 12)
    again = open_ledger(ledger_url, clock=clock)
    try:
        rep = report(again, "model", since="30d", source="rollup")  # no charge left to span days
        assert rep.units == ("units",) and [(r.unit, r.charges) for r in rep.rows] == [("units", 5)]
        assert rep.total_for("units").actual == Decimal("7.5")
        with again.transaction() as cur:
            cur.execute("SELECT DISTINCT unit FROM report_rollup")
            assert [r[0] for r in cur.fetchall()] == ["units"]
            cur.execute("SELECT COUNT(*) FROM report_rollup_meta WHERE name = 'backfill_upto'")
            assert cur.fetchone()[0] == 0
        again.commit(again.reserve(1, ["project:a"]), 1)  # upserts into the new key
        assert report(again, (), source="rollup").total_for("units").actual == Decimal("8.5")
    finally:
        again.close()


def test_migration_8_rebuilds_a_rollup_that_mixed_units(
    ledger_url: str, ledger: Ledger, clock: FakeClock
) -> None:
    seed_mixed(ledger, clock)
    _back_to_schema_7(ledger)
    rerun_migrations(ledger, 8, 12)
    again = open_ledger(ledger_url, clock=clock)
    try:
        for by in ("day,model", "key", "status"):
            fast = report(again, by, since="30d", source="rollup")
            slow = report(again, by, since="30d", source="charges")
            assert fast.rows == slow.rows and fast.totals == slow.totals
        assert totals(report(again, (), source="rollup"))["credits"][2] == Decimal("140")
        assert report(again, (), source="rollup").total_for("units").actual == Decimal("6")
    finally:
        again.close()
