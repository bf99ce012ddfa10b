from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from kling_cost import BudgetExceeded, KlingCostError, ReservationError
from kling_cost.ledger import Ledger
from tests.helpers import FakeClock


def test_budget_crud(ledger: Ledger) -> None:
    day = ledger.set_budget("project:film", 100, "day", tz="Europe/Paris", max_per_request="20")
    month = ledger.set_budget("project:film", "2000", "month", thresholds=["0.9", "0.5"])
    assert day.limit == Decimal(100) and day.tz == "Europe/Paris" and day.max_per_request == 20
    assert month.thresholds == (Decimal("0.5"), Decimal("0.9"))
    assert [b.window for b in ledger.budgets("project:film")] == ["day", "month"]
    updated = ledger.set_budget("project:film", 150, "day")
    assert updated.id == day.id and updated.limit == 150
    assert ledger.delete_budget("project:film", "month") is True
    assert ledger.delete_budget("project:film", "month") is False
    assert ledger.get_budget("project:film", "month") is None
    assert [b.window for b in ledger.budgets()] == ["day"]


def test_reserve_commit_release(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 100)
    ledger.set_budget("account", 1000)
    r = ledger.reserve(
        Decimal(30), ["project:film"], metadata={"prompt": "a red fox " * 20, "model": "kling-v2-6"}
    )
    assert r.scopes == ("account", "project:film")
    u = ledger.usage("project:film")
    assert (u.used, u.reserved, u.remaining) == (0, 30, 70)
    done = ledger.commit(r, actual=Decimal("24.5"), task_id="task-1")
    assert done.status == "committed" and done.actual == Decimal("24.5")
    u = ledger.usage("project:film")
    assert (u.used, u.reserved, u.remaining) == (Decimal("24.5"), 0, Decimal("75.5"))
    assert ledger.usage("account").used == Decimal("24.5")
    [charge] = ledger.charges("project:film")
    assert (charge.estimate, charge.actual, charge.task_id, charge.model) == (
        30,
        Decimal("24.5"),
        "task-1",
        "kling-v2-6",
    )
    assert charge.prompt_preview == ("a red fox " * 20)[:100]
    assert charge.prompt_hash and len(charge.prompt_hash) == 64
    assert "prompt" not in charge.metadata
    r2 = ledger.reserve(50, ["project:film"])
    assert ledger.release(r2).status == "released"
    assert ledger.usage("project:film").reserved == 0
    assert ledger.charges() == [charge]


def test_all_or_nothing_across_scopes(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 100)
    ledger.set_budget("key:alice", 10)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(20, ["project:film", "key:alice"])
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err, KlingCostError)
    assert (err.scope, err.window, err.requested, err.available) == ("key:alice", "day", 20, 10)
    assert ledger.usage("project:film").reserved == 0  # nothing held on the scope that had room


def test_limit_raise_takes_effect_immediately(ledger: Ledger) -> None:
    ledger.set_budget("account", 10)
    ledger.commit(ledger.reserve(10))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(1)
    ledger.set_budget("account", 11)
    assert ledger.reserve(1).status == "reserved"


def test_max_per_request(ledger: Ledger) -> None:
    ledger.set_budget("key:bob", 1000, max_per_request=35)
    ledger.reserve(35, ["key:bob"])
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("35.001", ["key:bob"])
    assert info.value.reason == "max_per_request"
    assert ledger.usage("key:bob").reserved == 35


def test_idempotency(ledger: Ledger) -> None:
    ledger.set_budget("account", 100)
    a = ledger.reserve(10, idempotency_key="ext-1")
    b = ledger.reserve(10, idempotency_key="ext-1")
    assert a.id == b.id and ledger.usage("account").reserved == 10
    first = ledger.commit(a, 9)
    again = ledger.commit(a, 5)
    assert again.actual == first.actual == 9
    assert ledger.reserve(10, idempotency_key="ext-1").status == "committed"
    assert ledger.usage("account").used == 9
    assert len(ledger.charges()) == 1
    with pytest.raises(ReservationError):
        ledger.release(a)
    r = ledger.reserve(5)
    ledger.release(r)
    assert ledger.release(r).status == "released"
    with pytest.raises(ReservationError, match="released"):
        ledger.commit(r)
    with pytest.raises(ReservationError, match="does not exist"):
        ledger.commit("nope")


def test_leases_expire_and_are_reclaimed(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("account", 10)
    r = ledger.reserve(10, ttl=timedelta(minutes=5))
    with pytest.raises(BudgetExceeded):
        ledger.reserve(1)
    clock.advance(minutes=5)
    assert ledger.reserve(4).status == "reserved"  # the next operation reclaimed the lease
    assert ledger.get_reservation(r.id).status == "expired"  # type: ignore[union-attr]
    with pytest.raises(ReservationError, match="expired"):
        ledger.commit(r)
    late = ledger.commit(r, 10, force=True)  # Kling charged anyway: recorded, actuals win
    assert late.status == "committed"
    u = ledger.usage("account")
    assert (u.used, u.reserved) == (10, 4)


def test_explicit_sweep_and_extend(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("account", 100)
    a = ledger.reserve(10, ttl=timedelta(seconds=30))
    b = ledger.reserve(10, ttl=timedelta(seconds=30))
    ledger.extend(b, timedelta(minutes=10))
    clock.advance(seconds=31)
    assert ledger.sweep() == 1
    assert ledger.get_reservation(a.id).status == "expired"  # type: ignore[union-attr]
    assert ledger.usage("account").reserved == 10
    assert ledger.sweep() == 0


def test_attach_task_and_pending(ledger: Ledger) -> None:
    r = ledger.reserve(3, ["user:bob"], metadata={"model": "kling-v1"})
    ledger.attach_task(r, "task-9", {"external_task_id": "x"})
    [pending] = ledger.reservations(status="reserved")
    assert pending.task_id == "task-9" and pending.metadata["external_task_id"] == "x"
    assert ledger.get_reservation(r.idempotency_key).id == r.id  # type: ignore[union-attr]


def test_scopes_without_budget_are_tracked(ledger: Ledger) -> None:
    r = ledger.reserve(7, ["project:free"])
    ledger.commit(r)
    assert [c.actual for c in ledger.charges("project:free")] == [7]
    assert ledger.totals() == {"units": {"charged": Decimal(7), "reserved": Decimal(0)}}


def test_durable_across_reopen(ledger_url: str, clock: FakeClock) -> None:
    from kling_cost.ledger import open_ledger

    with open_ledger(ledger_url, clock=clock) as first:
        first.set_budget("project:film", 50)
        r = first.reserve(20, ["project:film"], idempotency_key="k")
    with open_ledger(ledger_url, clock=clock) as second:
        assert second.usage("project:film").reserved == 20
        second.commit("k" and r.id, 18)
        assert second.usage("project:film").used == 18


def test_the_sweep_reads_only_the_open_holds(ledger: Ledger, clock: FakeClock) -> None:
    """A reservation sweeps lapsed leases once a second inside its write transaction: it must
    read them through the partial index of open holds, never every reservation ever made (an
    ``ORDER BY id`` made SQLite scan the table; the reserve slowed as the ledger grew)."""
    from kling_cost.ledger.settle import SWEEP_SELECT

    ledger.set_budget("account", 1000)
    for _ in range(5):
        ledger.commit(ledger.reserve(1), 1)
    lapsing = [ledger.reserve(2, ttl=timedelta(seconds=30)) for _ in range(3)]
    kept = ledger.reserve(3, ttl=timedelta(minutes=10))
    with ledger.transaction() as cur:
        if ledger.backend.dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + SWEEP_SELECT, (0,))
            plan = " ".join(str(row[-1]) for row in cur.fetchall())
            assert "USING INDEX reservations_open" in plan and "SCAN" not in plan, plan
        else:
            cur.execute("SET LOCAL enable_seqscan = off")  # as on a large table
            cur.execute("EXPLAIN " + SWEEP_SELECT.replace("?", "0"))
            plan = " ".join(str(row[0]) for row in cur.fetchall())
            assert "reservations_open" in plan, plan
    clock.advance(seconds=31)
    assert ledger.sweep() == 3
    assert [ledger.get_reservation(r.id).status for r in lapsing] == ["expired"] * 3  # type: ignore[union-attr]
    assert ledger.get_reservation(kept.id).status == "reserved"  # type: ignore[union-attr]
    usage = ledger.usage("account")
    assert (usage.used, usage.reserved) == (5, 3)
