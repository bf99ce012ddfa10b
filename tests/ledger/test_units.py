"""One unit per budget: a reservation priced in another unit is refused before anything is held."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from kling_cost import UnitMismatch, ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.holds import Holds
from kling_cost.ledger.schema import MIGRATIONS
from tests.helpers import FakeClock


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
    assert isinstance(old, Ledger)
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
    conn.execute("DROP TABLE rollup_pending")  # migration 13's
    conn.execute("DROP TABLE budget_epoch")  # migration 14's
    conn.execute("DROP TABLE request_cache")
    for table in ("proxy_relays", "proxy_tasks", "proxy_keys"):  # migration 9's
        conn.execute(f"DROP TABLE {table}")
    for table in ("bill_differences", "bill_runs", "bill_meta"):  # migration 10's
        conn.execute(f"DROP TABLE {table}")
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


def test_a_late_charge_never_counts_in_a_budget_that_switched_unit(ledger: Ledger, clock: FakeClock) -> None:
    """Before: a units reservation whose lease lapsed (its hold freed, so the budget could
    switch to credits) was committed later with force=True (Kling charged it): its 9 units
    were added to the credits budget's used."""
    ledger.set_budget("account", 100)
    res = ledger.reserve(7, idempotency_key="k1", ttl=timedelta(minutes=1))
    ledger.attach_task(res, "task-1")
    clock.advance(minutes=2)
    assert ledger.sweep() == 1
    ledger.set_budget("account", 50, unit="credits")  # empty now: allowed
    ledger.commit(res, 9, force=True)
    u = ledger.usage("account")
    assert (u.unit, u.used, u.reserved) == ("credits", 0, 0)
    [charge] = ledger.charges()
    assert (charge.unit, charge.actual, charge.overage) == ("units", 9, 0)  # recorded, in its unit
    assert [a for a in ledger.alerts() if a.kind == "overage"] == []
    assert ledger.totals() == {"units": {"charged": 9, "reserved": 0}}


def _paused_reservation(ledger: Ledger, meanwhile: Any) -> dict[str, Any]:
    """Reserve 5 on ``account``, pausing right after the budgets were read while ``meanwhile``
    runs in another thread (given half a second to finish first, as it did before the lock)."""
    read, go = threading.Event(), threading.Event()
    real_hold = Holds.hold

    def paused_hold(*args: Any, **kwargs: Any) -> Any:
        read.set()
        go.wait(10)
        return real_hold(*args, **kwargs)

    Holds.hold = staticmethod(paused_hold)  # type: ignore[method-assign,assignment]
    outcome: dict[str, Any] = {}

    def reserve() -> None:
        try:
            outcome["reservation"] = ledger.reserve(5)
        except Exception as exc:  # the assertion names it
            outcome["reserve_error"] = exc

    def other() -> None:
        try:
            outcome["other"] = meanwhile()
        except ValidationError as exc:
            outcome["refused"] = str(exc)

    first = threading.Thread(target=reserve)
    first.start()
    assert read.wait(10)
    second = threading.Thread(target=other)
    second.start()
    second.join(0.5)  # it must wait for the reservation (a lock), not decide before it
    go.set()
    first.join(10)
    second.join(10)
    Holds.hold = staticmethod(real_hold)  # type: ignore[method-assign,assignment]
    return outcome


def test_a_unit_switch_racing_a_reservation_never_leaves_a_hold_of_another_unit(ledger: Ledger) -> None:
    """Before (PostgreSQL): the switch checked for holds while a reservation that had read the
    budget as `units` was about to hold; both committed: a units hold (then used) in a credits
    budget. A reservation now holds the budget row it read until it commits."""
    ledger.set_budget("account", 100)
    outcome = _paused_reservation(ledger, lambda: ledger.set_budget("account", 100, unit="credits"))
    assert "other" not in outcome and "cannot switch to credits" in outcome["refused"]
    u = ledger.usage("account")
    assert (u.unit, u.reserved) == ("units", 5)


def test_a_budget_deleted_while_a_reservation_holds_on_it(ledger: Ledger) -> None:
    """Before (PostgreSQL): the reservation's hold failed with a raw foreign-key StorageError
    when the budget it had read was deleted before it held; the deletion now waits for it."""
    ledger.set_budget("account", 100)
    outcome = _paused_reservation(ledger, lambda: ledger.delete_budget("account", "day"))
    assert outcome["other"] is True and "reserve_error" not in outcome
    assert ledger.budgets() == []
    ledger.release(outcome["reservation"])  # its budget is gone: nothing to give back, no error
    assert ledger.set_budget("account", 100).id != outcome["reservation"].windows[0][0]


def test_a_limit_change_never_switches_a_unit_back(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before (PostgreSQL): `set_budget(scope, limit)` read the unit (units), a concurrent
    switch to credits committed and a credits reservation held; the limit change then wrote
    the unit it had read: a units budget holding credits, switched without any check."""
    from kling_cost.ledger import limits

    ledger.set_budget("account", 100)
    read, go = threading.Event(), threading.Event()
    real = limits.budget_row
    changer = threading.current_thread()

    def paused(row: Any) -> Any:
        if threading.current_thread() is not changer and not read.is_set():
            read.set()  # the limit change read the budget (as units)...
            go.wait(10)  # ...while the switch and a credits hold commit
        return real(row)

    monkeypatch.setattr(limits, "budget_row", paused)
    changed: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: changed.update(budget=ledger.set_budget("account", 200)))
    worker.start()
    assert read.wait(10)
    switched: dict[str, Any] = {}

    def switch_and_hold() -> None:
        switched["budget"] = ledger.set_budget("account", 100, unit="credits")
        switched["hold"] = ledger.reserve(5, unit="credits")

    other = threading.Thread(target=switch_and_hold)
    other.start()
    other.join(0.5)  # PostgreSQL: done; SQLite: waits for the limit change to commit
    go.set()
    worker.join(10)
    other.join(10)
    assert changed["budget"].limit == 200 and switched["hold"].unit == "credits"
    u = ledger.usage("account")
    assert (u.unit, u.reserved) == ("credits", 5)
