"""The guard records what priced every reservation and settles in that unit, whatever catalog
the settling client was built with (the overspend of issue 11, item 1). Both guards, both
ledger backends; batches run on the sync guard."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost import UnitMismatch
from kling_cost.batch import BatchRunner, read_batch
from kling_cost.cache import CachePolicy
from tests.guard.conftest import SYNC_ONLY, World
from tests.guard.test_batch import ticking

PRO_10S = {"mode": "pro", "duration": 10}
CREDITS = "kling-app-credits"
CREDIT_TABLE_DATE = "2026-04-23"  # effective_from of the seed's credit table


def test_reservation_records_unit_catalog_and_entry_date(any_world: World) -> None:
    world = any_world
    world.ledger.set_budget("account", 500, unit="credits")
    with world.guard(catalog=CREDITS, scopes=[]) as guard:
        task = guard.text_to_video("a fox", **PRO_10S)
    res = world.ledger.get_reservation(task.external_task_id or "")
    assert res is not None
    assert (res.amount, res.unit, res.catalog, res.catalog_date) == (
        Decimal(70),
        "credits",
        CREDITS,
        CREDIT_TABLE_DATE,
    )


def test_settle_with_a_units_client_commits_the_reserved_credits(any_world: World) -> None:
    """The repro: reserved in credits by one client, settled by another whose catalog counts
    Kling's units (the CLI's default): the commit is 70 credits, not Kling's units."""
    world = any_world
    world.ledger.set_budget("account", 500, unit="credits")
    with world.guard(catalog=CREDITS, scopes=[]) as guard:
        tasks = [guard.text_to_video(f"shot {i}", **PRO_10S) for i in range(3)]
    world.finish()
    with world.guard(scopes=[]) as settler:  # catalog kling-api, like `kling-cost settle`
        assert settler.core.catalog.unit == "units"
        report = settler.settle_pending()
    assert len(report.committed) == 3 and report.errors == []
    u = world.ledger.usage("account")
    assert (u.used, u.reserved, u.unit) == (Decimal(210), 0, "credits")
    charges = world.ledger.charges()
    assert {(c.unit, c.actual, c.catalog) for c in charges} == {("credits", Decimal(70), CREDITS)}
    kling_units = {t.task_id: t.charged for t in world.tasks}
    for c in charges:  # Kling's own figure is kept beside, never committed as credits
        assert Decimal(c.metadata["kling_units"]) == kling_units[c.task_id] != 70
        assert c.metadata["actual_source"] == "estimate (reserved in credits)"
    assert {t.task_id for t in tasks} == set(kling_units)


def test_units_reservations_still_commit_what_kling_charged(any_world: World) -> None:
    world = any_world
    world.ledger.set_budget("account", 100)
    with world.guard(scopes=[]) as guard:
        task = guard.text_to_video("a fox", model_name="kling-v2-6", **PRO_10S)
        world.finish()
        guard.wait(task, poll=0.01)
    [charge] = world.ledger.charges()
    assert (charge.unit, charge.catalog, charge.actual) == ("units", "kling-api", Decimal(5))
    assert charge.metadata["actual_source"] == "kling"


def test_a_units_client_is_refused_by_a_credits_budget_before_sending(any_world: World) -> None:
    world = any_world
    world.ledger.set_budget("account", 500, unit="credits")
    with world.guard(scopes=["project:film"]) as guard, pytest.raises(UnitMismatch) as info:
        guard.text_to_video("a fox", **PRO_10S)
    assert (info.value.budget_unit, info.value.request_unit) == ("credits", "units")
    assert "--catalog kling-app-credits" in str(info.value)
    assert world.tasks == []  # nothing sent to Kling
    assert world.ledger.reservations() == []
    assert world.ledger.usage("account").reserved == 0
    with world.guard(scopes=["project:film"], catalog=CREDITS) as guard:
        guard.text_to_video("a fox", **PRO_10S)  # priced in credits: goes through
    assert world.ledger.usage("account").reserved == 70


def test_a_late_charge_is_recorded_in_the_reservation_unit(any_world: World) -> None:
    """A hold freed before Kling's charge was seen: the late charge keeps the unit."""
    world = any_world
    world.ledger.set_budget("account", 500, unit="credits")
    with world.guard(catalog=CREDITS, scopes=[]) as guard:
        task = guard.text_to_video("a fox", **PRO_10S)
        res = world.ledger.get_reservation(task.external_task_id or "")
        assert res is not None
        world.ledger.release(res, failed=False)
        world.finish()
    with world.guard(scopes=[]) as settler:  # a units client sees the ended task
        settler.get_task("text2video", task.task_id)
    late = [c for c in world.ledger.charges() if c.status == "succeeded"]
    assert [(c.unit, c.actual, c.catalog) for c in late] == [("credits", Decimal(70), CREDITS)]
    assert world.ledger.usage("account").used == 70


def test_a_cache_hit_records_the_hitters_unit_and_estimate(any_world: World) -> None:
    world = any_world
    world.ledger.set_budget("account", 500, unit="credits")
    with world.guard(catalog=CREDITS, scopes=[], cache=CachePolicy(wait_poll=0.01)) as guard:
        first = guard.text_to_video("the same shot", **PRO_10S)
        world.finish()
        guard.wait(first, poll=0.01)
        guard.text_to_video("the same shot", **PRO_10S)  # served from the cache
    [hit] = [c for c in world.ledger.charges() if c.status == "cache_hit"]
    assert (hit.unit, hit.catalog, hit.catalog_date, hit.estimate, hit.actual) == (
        "credits",
        CREDITS,
        CREDIT_TABLE_DATE,
        Decimal(70),
        0,
    )
    assert world.ledger.usage("account").used == 70


@SYNC_ONLY
def test_a_batch_in_another_unit_stops_before_sending_anything(any_world: World, tmp_path: Path) -> None:
    world = any_world
    world.ledger.set_budget("account", 500, unit="credits")
    path = tmp_path / "rows.txt"
    path.write_text("one\ntwo\nthree\n")
    rows = read_batch(path, {"mode": "pro", "duration": 10})
    with world.guard(scopes=[]) as guard:  # kling-api: units
        summary = BatchRunner(guard, rows, concurrency=1, poll=0.01).run()
    assert [r.status for r in summary.results] == ["refused", "skipped", "skipped"]
    assert "counts credits" in (summary.results[0].error or "")
    assert world.tasks == [] and world.ledger.reservations() == []


@SYNC_ONLY
def test_a_resumed_batch_settles_in_the_recorded_unit(any_world: World, tmp_path: Path) -> None:
    """Rows reserved and sent in credits, resumed by a runner whose client prices in units
    (no budget on these scopes refuses it): every row is settled as the 70 credits it held."""
    world = any_world
    path = tmp_path / "rows.txt"
    path.write_text("one\ntwo\n")
    rows = read_batch(path, {"mode": "pro", "duration": 10})
    with world.guard(catalog=CREDITS, scopes=[]) as guard:
        for row in rows:
            guard.create(row.endpoint, row.body)  # sent; the process "dies" before waiting
    world.finish()
    with world.guard(scopes=[]) as units_guard:
        summary = BatchRunner(units_guard, rows, concurrency=2, poll=0.01).run()
    assert [(r.status, r.charged, r.unit) for r in summary.results] == [("done", Decimal(70), "credits")] * 2
    assert {(c.unit, c.actual) for c in world.ledger.charges()} == {("credits", Decimal(70))}
    assert len(world.tasks) == 2


@SYNC_ONLY
def test_a_batch_resumed_after_its_holds_lapsed_settles_in_the_recorded_unit(
    any_world: World, tmp_path: Path
) -> None:
    """Rows sent in credits whose holds lapsed while their tasks ran (the batch was killed and
    re-run hours later, with the default catalog): before, the re-run asked to reserve them
    again in units and reported an idempotency conflict, leaving Kling's charges unrecorded."""

    from kling_cost.guard import CostAwareClient
    from kling_cost.ledger import open_ledger
    from tests.helpers import FakeClock

    world = any_world
    clock = FakeClock()
    clock.set(world.ledger.clock())
    path = tmp_path / "rows.txt"
    path.write_text("one\ntwo\n")
    rows = read_batch(path, {"mode": "pro", "duration": 10})
    policy = CachePolicy(wait_poll=0.01)
    with open_ledger(world.ledger_url, clock=clock) as ledger:
        with CostAwareClient(world.kling(), ledger, catalog=CREDITS, cache=policy) as guard:
            for row in rows:
                guard.create(row.endpoint, row.body)  # sent; the process "dies" before waiting
        clock.advance(hours=3)  # longer than the task lease: the holds lapse
        assert ledger.sweep() == 2
        world.finish()
        with CostAwareClient(world.kling(), ledger, cache=policy) as units_guard:
            summary = BatchRunner(units_guard, rows, concurrency=2, poll=0.01).run()
        assert [(r.status, r.charged, r.unit) for r in summary.results] == [
            ("done", Decimal(70), "credits")
        ] * 2
        assert {(c.unit, c.actual) for c in ledger.charges()} == {("credits", Decimal(70))}
        assert {r.status for r in ledger.reservations()} == {"committed"}
    assert len(world.tasks) == 2


@SYNC_ONLY
def test_a_batch_summary_never_adds_units_and_credits(any_world: World, tmp_path: Path) -> None:
    """A re-run that resumes a row sent in credits and sends a new one in units: before, the
    summary's `spent` added 70 credits and the units into one figure (shown in the plan's unit)."""
    world = any_world
    path = tmp_path / "rows.txt"
    path.write_text("one\ntwo\n")
    rows = read_batch(path, {"mode": "pro", "duration": 10})
    with world.guard(catalog=CREDITS, scopes=[]) as guard:
        guard.create(rows[0].endpoint, rows[0].body)  # sent in credits; the process "dies"
    world.finish()
    with world.guard(scopes=[]) as units_guard, ticking(world):
        summary = BatchRunner(units_guard, rows, concurrency=1, poll=0.01).run()
    units = next(c.actual for c in world.ledger.charges() if c.unit == "units")
    assert [(r.status, r.unit) for r in summary.results] == [("done", "credits"), ("done", "units")]
    assert summary.spent_by_unit == {"credits": Decimal(70), "units": units}
    data = summary.to_dict()
    assert data["spent_by_unit"] == {"credits": "70", "units": str(units.normalize())}
    assert (data["unit"], data["spent"], summary.spent) == (None, None, None)  # no single figure


@SYNC_ONLY
def test_a_batch_summary_in_one_unit_keeps_its_total(any_world: World, tmp_path: Path) -> None:
    world = any_world
    path = tmp_path / "rows.txt"
    path.write_text("one\ntwo\n")
    rows = read_batch(path, {"mode": "pro", "duration": 10})
    with world.guard(catalog=CREDITS, scopes=[]) as guard, ticking(world):
        summary = BatchRunner(guard, rows, concurrency=2, poll=0.01).run()
    data = summary.to_dict()
    assert (data["unit"], data["spent"], data["spent_by_unit"]) == ("credits", "140", {"credits": "140"})
