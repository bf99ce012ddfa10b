"""Item 2 of issue 11: a deleted budget's id is never given to another budget, so the holds,
alerts and reports of a deleted budget can never touch or show another one."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.ledger import Ledger, copy_ledger, open_ledger
from tests.helpers import FakeClock, fresh_postgres_url, need_postgres


def test_holds_of_a_deleted_budget_never_touch_a_new_one(ledger: Ledger) -> None:
    old = ledger.set_budget("project:old", 10)
    hold = ledger.reserve(8, ["project:old"])
    assert ledger.delete_budget("project:old", "day")
    new = ledger.set_budget("project:new", 10)
    assert new.id != old.id
    ledger.release(hold)
    usage = ledger.usage("project:new")
    assert (usage.used, usage.reserved) == (0, 0)
    spent = ledger.reserve(10, ["project:new"])
    ledger.commit(spent, 10)
    late = ledger.reserve_unchecked(7, ["project:new"])
    ledger.release(late)
    usage = ledger.usage("project:new")
    assert (usage.used, usage.reserved, usage.remaining) == (10, 0, 0)


def test_a_deleted_budgets_expired_hold_committed_late_touches_no_one(
    ledger: Ledger, clock: FakeClock
) -> None:
    ledger.set_budget("project:old", 10)
    hold = ledger.reserve(8, ["project:old"])
    ledger.delete_budget("project:old", "day")
    ledger.set_budget("project:new", 10)
    ledger.commit(ledger.reserve(1, ["project:new"]), 1)
    clock.advance(minutes=40)
    assert ledger.sweep() == 1
    ledger.commit(hold, 8, force=True)  # Kling charged it after all: it counts nowhere now
    usage = ledger.usage("project:new")
    assert (usage.used, usage.reserved) == (1, 0)


def test_alerts_of_a_deleted_budget_stay_its_own(ledger: Ledger) -> None:
    old = ledger.set_budget("project:old", 10, thresholds=["0.5"])
    ledger.commit(ledger.reserve(6, ["project:old"]), 6)
    [alert] = ledger.alerts(scope="project:old")
    ledger.delete_budget("project:old", "day")
    new = ledger.set_budget("project:new", 10, thresholds=["0.5"])
    ledger.commit(ledger.reserve(6, ["project:new"]), 6)
    rows = {a.scope: a for a in ledger.alerts()}
    assert set(rows) == {"project:old", "project:new"}
    assert rows["project:old"].id == alert.id and rows["project:old"].budget_id == old.id
    assert rows["project:old"].cleared_at is not None
    assert rows["project:new"].budget_id == new.id and rows["project:new"].cleared_at is None
    assert ledger.outbox.budget(old.id) is None  # a "resolved" message names no other budget


def _pg() -> str:
    need_postgres()
    return fresh_postgres_url()


@pytest.mark.parametrize("target_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_copied_ledger_never_reuses_a_deleted_budgets_id(tmp_path: Path, target_kind: str) -> None:
    clock = FakeClock()
    source_url = f"sqlite:///{tmp_path / 'src.db'}"
    target_url = f"sqlite:///{tmp_path / 'dst.db'}" if target_kind == "sqlite" else _pg()
    with open_ledger(source_url, clock=clock) as src:
        src.set_budget("account", 100)
        src.set_budget("project:old", 10)
        hold = src.reserve(8, ["project:old"])
        src.delete_budget("project:old", "day")
    try:
        with open_ledger(source_url, clock=clock) as src, open_ledger(target_url, clock=clock) as dst:
            copy_ledger(src, dst)
        with open_ledger(target_url, clock=clock) as dst:
            dst.set_budget("project:new", 10)
            dst.commit(dst.reserve(1, ["project:new"]), 1)
            dst.release(hold.id)
            usage = dst.usage("project:new")
            assert (usage.used, usage.reserved) == (1, 0)
            assert dst.usage("account").used == 1 and dst.usage("account").reserved == Decimal(0)
    finally:
        if target_kind == "postgres":
            with open_ledger(target_url) as dst:
                dst.backend.drop_schema()  # type: ignore[attr-defined]


def test_upgrading_an_sqlite_ledger_keeps_its_data_and_never_reuses_an_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from kling_cost.ledger import schema

    url = f"sqlite:///{tmp_path / 'old.db'}"
    clock = FakeClock()
    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] < 7])
    with open_ledger(url, clock=clock) as old:  # a ledger from before the upgrade
        old.set_budget("account", 100)
        kept = old.set_budget("project:a", 10)
        gone = old.set_budget("project:old", 10, thresholds=["0.5"])
        hold = old.reserve(8, ["project:old"])
        old.reserve(2, ["project:a"])
        old.delete_budget("project:old", "day")  # the newest id: SQLite would hand it out again
    monkeypatch.undo()
    with open_ledger(url, clock=clock) as led:
        new = led.set_budget("project:new", 10)
        assert new.id > gone.id
        led.commit(led.reserve(1, ["project:new"]), 1)
        led.release(hold)
        assert (led.usage("project:new").used, led.usage("project:new").reserved) == (1, 0)
        assert (led.usage("project:a").reserved, led.usage("account").reserved) == (2, 2)
        assert led.get_budget("project:a", "day") == kept
        led.delete_budget("project:a", "day")  # the cascade to its windows still works
    conn = sqlite3.connect(tmp_path / "old.db")
    try:
        assert conn.execute(
            "SELECT COUNT(*) FROM budget_windows WHERE budget_id = ?", (kept.id,)
        ).fetchone() == (0,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'budget_windows'").fetchone()[0]
        assert "REFERENCES budgets(" in sql.replace('"', "")
    finally:
        conn.close()


def test_budget_changes_retry_when_they_lose_a_race(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget change that loses a race (PostgreSQL picks it as a deadlock victim when it
    meets reservations in flight) is retried, like every money operation; before, the
    ledger's internal ``Conflict`` escaped ``set_budget`` and ``delete_budget`` (no
    KlingCostError: a traceback in the CLI)."""
    from kling_cost.ledger.backend import Conflict

    lost = {"set": 1, "delete": 1}

    def loses_once(what: str, real: Any) -> Any:
        def hook(*args: Any, **kwargs: Any) -> Any:
            if lost[what]:
                lost[what] -= 1
                raise Conflict("deadlock detected")
            return real(*args, **kwargs)

        return hook

    outbox = ledger.outbox.writer
    monkeypatch.setattr(outbox, "after_budget_set", loses_once("set", outbox.after_budget_set))
    monkeypatch.setattr(outbox, "budget_deleted", loses_once("delete", outbox.budget_deleted))
    assert ledger.set_budget("project:x", 10).limit == 10
    assert ledger.delete_budget("project:x", "day") is True
    assert lost == {"set": 0, "delete": 0} and ledger.budgets() == []
