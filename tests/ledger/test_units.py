"""One unit per budget: a reservation priced in another unit is refused before anything is held."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kling_cost import UnitMismatch, ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.base import Ledger as _Ledger
from kling_cost.ledger.schema import MIGRATIONS


def test_budgets_default_to_units_and_keep_their_unit(ledger: Ledger) -> None:
    assert ledger.set_budget("account", 10).unit == "units"
    credits = ledger.set_budget("project:film", 500, unit="credits")
    assert credits.unit == "credits"
    assert credits.to_dict()["unit"] == "credits"
    # Updating the limit without naming a unit keeps the budget's unit.
    assert ledger.set_budget("project:film", 600).unit == "credits"
    assert ledger.get_budget("project:film", "day").unit == "credits"  # type: ignore[union-attr]
    usage = {u.scope: u for u in ledger.usages()}
    assert usage["project:film"].unit == "credits"
    assert usage["project:film"].to_dict()["unit"] == "credits"


def test_unknown_unit_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="unit 'dollars' is unknown"):
        ledger.set_budget("account", 10, unit="dollars")
    with pytest.raises(ValidationError, match="unit 'credit' is unknown"):
        ledger.reserve(1, unit="credit")
    assert ledger.budgets() == []


def test_reservation_in_another_unit_is_refused_before_anything_is_held(ledger: Ledger) -> None:
    ledger.set_budget("account", 12)  # units
    ledger.set_budget("project:film", 500, unit="credits")
    with pytest.raises(UnitMismatch) as info:
        ledger.reserve(70, ["project:film"], unit="credits", idempotency_key="k1")
    err = info.value
    assert (err.scope, err.budget_unit, err.request_unit) == ("account", "units", "credits")
    assert "counts units" in str(err) and "priced in credits" in str(err)
    assert "\n" not in str(err)
    # Nothing held anywhere, no reservation row, and the key is still free.
    assert all(u.reserved == 0 and u.used == 0 for u in ledger.usages())
    assert ledger.reservations() == []
    with pytest.raises(UnitMismatch):
        ledger.reserve(2, ["project:film"], unit="units")
    assert all(u.reserved == 0 for u in ledger.usages())


def test_charge_and_cache_hit_refuse_another_unit(ledger: Ledger) -> None:
    ledger.set_budget("account", 500, unit="credits")
    with pytest.raises(UnitMismatch):
        ledger.charge(7, unit="units")
    assert ledger.charges() == []
    ledger.charge(70, unit="credits", catalog="kling-app-credits", catalog_date="2026-04-23")
    (charge,) = ledger.charges()
    assert (charge.unit, charge.catalog, charge.catalog_date) == (
        "credits",
        "kling-app-credits",
        "2026-04-23",
    )
    assert ledger.usages()[0].used == Decimal("70.000")


def test_reservation_and_charge_record_unit_and_catalog(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 500, unit="credits")
    ledger.set_budget("account", 1000, unit="credits")
    res = ledger.reserve(
        70, ["project:film"], unit="credits", catalog="kling-app-credits", catalog_date="2026-04-23"
    )
    assert (res.unit, res.catalog, res.catalog_date) == ("credits", "kling-app-credits", "2026-04-23")
    stored = ledger.get_reservation(res.id)
    assert (stored.unit, stored.catalog, stored.catalog_date) == (
        "credits",
        "kling-app-credits",
        "2026-04-23",
    )
    ledger.commit(res, 70)
    (charge,) = ledger.charges()
    assert charge.unit == "credits"
    assert charge.to_dict()["unit"] == "credits"
    assert charge.catalog == "kling-app-credits"


def test_bad_catalog_fields_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValidationError, match="catalog_date"):
        ledger.reserve(1, catalog="kling-api", catalog_date="yesterday")
    with pytest.raises(ValidationError, match="catalog must be"):
        ledger.reserve(1, catalog="")
    assert ledger.reservations() == []


def test_a_budget_switches_unit_only_while_empty(ledger: Ledger) -> None:
    ledger.set_budget("account", 100)
    assert ledger.set_budget("account", 100, unit="credits").unit == "credits"  # empty: fine
    res = ledger.reserve(10, unit="credits")
    with pytest.raises(ValidationError, match="cannot switch to units"):
        ledger.set_budget("account", 100, unit="units")
    assert ledger.get_budget("account", "day").unit == "credits"  # type: ignore[union-attr]
    ledger.release(res)
    assert ledger.set_budget("account", 100, unit="units").unit == "units"


def test_budget_exceeded_names_the_unit(ledger: Ledger) -> None:
    ledger.set_budget("account", 500, unit="credits")
    ledger.reserve(450, unit="credits")
    with pytest.raises(Exception, match="500 credits") as info:
        ledger.reserve(70, unit="credits")
    assert info.value.unit == "credits"  # type: ignore[attr-defined]


def test_existing_ledgers_migrate_to_units(tmp_path: pytest.TempPathFactory) -> None:
    path = f"{tmp_path}/old.db"
    old = open_ledger(f"sqlite:///{path}")
    assert isinstance(old, _Ledger)
    old.close()
    # Rebuild the ledger as it was before migration 6, with one budget and one charge.
    import sqlite3

    conn = sqlite3.connect(path)
    for table in ("budgets", "budget_windows", "reservations", "charges"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM schema_version")
    conn.commit()
    conn.close()
    before = [m for m in MIGRATIONS if m[0] < 6]
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE alerts")
    conn.execute("DROP TABLE report_rollup")
    conn.execute("DROP TABLE report_rollup_meta")
    conn.execute("DROP TABLE request_cache")
    for version, statements in before:
        for statement in statements:
            conn.execute(statement.replace("{id}", "INTEGER PRIMARY KEY").replace("{without_rowid}", ""))
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO budgets (scope, period, tz, limit_milli, thresholds, created_at, updated_at) "
        "VALUES ('account', 'day', 'UTC', 12000, '[\"1\"]', 0, 0)"
    )
    conn.commit()
    conn.close()
    led = open_ledger(f"sqlite:///{path}")
    try:
        (budget,) = led.budgets()
        assert budget.unit == "units"
        res = led.reserve(2, unit="units")
        assert res.unit == "units"
        with pytest.raises(UnitMismatch):
            led.reserve(2, unit="credits")
    finally:
        led.close()


def test_totals_are_per_unit_never_added_together(ledger: Ledger) -> None:
    assert ledger.totals() == {}
    ledger.set_budget("project:app", 500, unit="credits")
    ledger.charge(70, ["project:app"], unit="credits")
    ledger.reserve(35, ["project:app"], unit="credits")
    ledger.charge(Decimal("2.5"), ["project:api"], unit="units")
    assert ledger.totals() == {
        "credits": {"charged": Decimal(70), "reserved": Decimal(35)},
        "units": {"charged": Decimal("2.5"), "reserved": Decimal(0)},
    }
