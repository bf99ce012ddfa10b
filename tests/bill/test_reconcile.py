"""Reconciliation against the simulator's real billing endpoints, on both ledger backends:
guarded tasks, tasks sent straight to Kling (bypassing the ledger), a failed (refunded) task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from kling_cost.bill.reconcile import BillLine, compare, last_run, reconcile
from kling_cost.cache import CachePolicy
from kling_cost.cli import app
from kling_cost.guard import CostAwareClient
from kling_cost.kling import KlingClient, RetryPolicy
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.simulator import ManualClock, Simulator, create_app
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix
from tests.servers import AK, API_KEY, SK, serve

runner = CliRunner()


@dataclass
class World:
    url: str
    sim: Simulator
    clock: ManualClock
    ledger: Ledger
    ledger_url: str

    def kling(self, *, api_key: bool = True) -> KlingClient:
        keys: dict[str, Any] = {"api_key": API_KEY} if api_key else {}
        return KlingClient(AK, SK, base_url=self.url, retry=RetryPolicy(base_delay=0), **keys)

    def guard(self) -> CostAwareClient:
        return CostAwareClient(
            self.kling(), self.ledger, scopes=["project:film"], cache=CachePolicy(enabled=False)
        )

    def finish(self) -> None:
        self.clock.advance(11)
        self.sim.state.refresh()


@pytest.fixture
def world(ledger_url: str) -> Iterator[World]:  # noqa: F811
    # Kling's clock an hour behind the ledger's: deductions fall inside "the last 7 days, up to now".
    clock = ManualClock(time.time() - 3600)
    sim_app = create_app(
        AK, SK, api_key=API_KEY, clock=clock, task_seconds=10, failure_rate=0, concurrency=20
    )
    ledger = open_ledger(ledger_url)
    try:
        with serve(sim_app) as base:
            yield World(base, sim_app.state.simulator, clock, ledger, ledger_url)
    finally:
        ledger.close()


def _traffic(world: World) -> tuple[list[str], list[str]]:
    """Three guarded tasks (one fails: refunded), two sent straight to Kling: (guarded, bypass) ids."""
    guarded: list[str] = []
    with world.guard() as guard:
        tasks = [
            guard.text_to_video("a fox", model_name="kling-v2-6", mode="pro", duration=5),
            guard.text_to_video("a hare", model_name="kling-v2-6", mode="std", duration=10),
        ]
        world.sim.state.fail_next(1)
        tasks.append(guard.text_to_video("doomed", model_name="kling-v1"))
        with world.kling() as plain:  # around the guard: the ledger never hears of these
            bypass = [
                plain.text_to_video("sneaky", model_name="kling-v2-6", mode="pro", duration=10).task_id,
                plain.generate_images("a cat", model_name="kling-v2-1").task_id,
            ]
        world.finish()
        for task in tasks:
            done = guard.wait(task, poll=0.01)
            if done.succeeded:
                guarded.append(done.task_id)
    return guarded, bypass


def _kling_units(world: World) -> Decimal:
    return sum((c.amount for c in world.sim.state.accounts.charges if c.funding == "unit"), Decimal(0))


def test_bypass_tasks_are_unknown_and_fix_makes_the_ledger_match_the_bill(world: World) -> None:
    guarded, bypass = _traffic(world)
    assert len(guarded) == 2
    with world.kling() as client:
        first = reconcile(world.ledger, client)
    assert first.source == "billing" and first.complete
    assert first.counts == {
        "matched": 2,
        "amount_differs": 0,
        "unknown_to_ledger": 2,
        "not_billed": 0,
        "other_unit": 0,
    }
    assert [d.task_id for d in first.differences] == sorted(bypass)
    by_task = {d.task_id: d for d in first.differences}
    video = by_task[bypass[0]]
    assert (video.category, video.api_key_name, video.model, video.pack_type) == (
        "unknown_to_ledger",
        AK,  # on the legacy API the caller is named by its access key
        "kling-v2-6",
        "video",
    )
    assert video.kling_amount == Decimal("5") and video.ledger_amount is None
    assert by_task[bypass[1]].pack_type == "image" and by_task[bypass[1]].model == "kling-v2-1"
    assert not first.clean and first.fixed == ()
    assert first.by_pack["video"] == {"ledger": Decimal("5.5"), "kling": Decimal("10.5")}
    day_totals = [sides["kling"] for packs in first.by_day.values() for sides in packs.values()]
    assert sum(day_totals, Decimal(0)) == _kling_units(world)

    # The run and its differences are stored and read back.
    stored = last_run(world.ledger)
    assert stored is not None and first.run is not None and stored.id == first.run.id
    assert stored.status == "differences" and stored.fixed == 0
    assert stored.differences == first.differences
    assert stored.summary["counts"]["unknown_to_ledger"] == 2

    with world.kling() as client:
        fixed = reconcile(world.ledger, client, fix=True)
    assert sorted(fixed.fixed) == sorted(bypass) and fixed.clean
    assert fixed.counts["matched"] == 4 and fixed.differences == ()
    late = [c for c in world.ledger.charges() if c.metadata.get("source") == "reconcile"]
    assert {c.task_id for c in late} == set(bypass)
    assert all(c.metadata["late"] is True and c.metadata["api_key_name"] == AK for c in late)
    assert world.ledger.totals()["units"]["charged"] == _kling_units(world)  # to the unit

    with world.kling() as client:
        again = reconcile(world.ledger, client, fix=True)
        plain = reconcile(world.ledger, client)
    assert again.clean and again.fixed == () and plain.clean
    assert len(world.ledger.charges()) == len(guarded) + 1 + len(bypass)  # + the failed one (0)
    runs = world.ledger.runs.runs("reconcile")
    assert [r.status for r in runs] == ["clean", "clean", "clean", "differences"]
    assert runs[2].fixed == 2


def test_a_tampered_amount_differs_and_fix_adds_only_what_kling_charged_more(world: World) -> None:
    guarded, bypass = _traffic(world)
    with world.ledger.transaction() as cur:  # the ledger says 1 unit less for the first task
        cur.execute("UPDATE charges SET actual_milli = actual_milli - 1000 WHERE task_id = ?", (guarded[0],))
        cur.execute("UPDATE charges SET actual_milli = actual_milli + 500 WHERE task_id = ?", (guarded[1],))
    with world.kling() as client:
        result = reconcile(world.ledger, client)
        assert result.counts["amount_differs"] == 2
        diffs = {d.task_id: d for d in result.differences if d.category == "amount_differs"}
        assert (diffs[guarded[0]].ledger_amount, diffs[guarded[0]].kling_amount) == (
            Decimal("1.5"),
            Decimal("2.5"),
        )
        assert (diffs[guarded[1]].ledger_amount, diffs[guarded[1]].kling_amount) == (
            Decimal("3.5"),
            Decimal("3"),
        )
        loose = reconcile(world.ledger, client, tolerance="1")
        assert loose.counts["amount_differs"] == 0 and loose.counts["matched"] == 2
        fixed = reconcile(world.ledger, client, fix=True)
    assert set(fixed.fixed) == {guarded[0], *bypass}
    assert [(d.category, d.task_id) for d in fixed.differences] == [("amount_differs", guarded[1])], [
        (c.task_id, c.actual, c.created_at, c.metadata.get("source")) for c in world.ledger.charges()
    ]
    adjust = [c for c in world.ledger.charges() if c.task_id == guarded[0] and c.metadata.get("source")]
    assert [c.actual for c in adjust] == [Decimal("1")]


def test_ledger_charge_kling_never_billed_and_credits_apart(world: World) -> None:
    world.ledger.charge("2", "project:film", task_id="ghost-task", metadata={"kind": "text2video"})
    world.ledger.charge("30", "project:app", task_id="app-task", unit="credits")
    world.ledger.charge("1", "project:film")  # no task id: nothing to join
    with world.kling() as client:
        result = reconcile(world.ledger, client)
    assert [(d.category, d.task_id) for d in result.differences] == [
        ("not_billed", "ghost-task"),
        ("other_unit", "app-task"),
    ]
    assert result.counts["other_unit"] == 1 and not result.clean
    assert result.by_pack == {"video": {"ledger": Decimal("2"), "kling": Decimal("0")}}


def test_without_the_api_key_the_task_queries_check_the_ledgers_tasks(world: World) -> None:
    guarded, _bypass = _traffic(world)
    world.ledger.charge(
        "2", "project:film", task_id=guarded[0] + "-gone", metadata={"endpoint": "text2video"}
    )
    with world.kling(api_key=False) as client:
        result = reconcile(world.ledger, client, fix=True)
    assert result.source == "tasks" and not result.complete
    assert result.note is not None and "unknown to the ledger cannot be known" in result.note
    assert result.counts["matched"] == 2 and result.counts["unknown_to_ledger"] == 0
    assert [(d.category, d.task_id) for d in result.differences] == [("not_billed", guarded[0] + "-gone")]
    assert result.fixed == () and any("--fix needs" in p for p in result.problems)


def test_compare_joins_across_the_period_edges() -> None:
    from datetime import UTC, datetime

    since, until = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 8, tzinfo=UTC)
    late = BillLine("t-1", "unit", Decimal("2"), "video", at=until + timedelta(minutes=5))
    out_of_period = BillLine("t-2", "unit", Decimal("1"), "video", at=until + timedelta(hours=2))
    counts, diffs, _, by_day = compare([], [late, out_of_period], since=since, until=until)
    assert counts["unknown_to_ledger"] == 0 and diffs == [] and by_day == {}


def test_the_runs_store_reads_back_and_lists(world: World) -> None:
    assert last_run(world.ledger) is None and world.ledger.runs.runs() == []
    with world.kling() as client:
        run = reconcile(world.ledger, client, since="2d").run
    assert run is not None and run.status == "clean" and run.differences == ()
    assert world.ledger.runs.run(run.id) == run
    assert run.until - run.since >= timedelta(days=1)


# -------------------------------------------------------------------------------- the CLI


def _cli(world: World, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("KLING_COST_LEDGER", world.ledger_url)
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    result = runner.invoke(app, ["reconcile", "--base-url", world.url, *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_exit_codes_json_and_fix(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _guarded, bypass = _traffic(world)
    code, out, _ = _cli(world, monkeypatch)
    assert code == 1
    assert "unknown_to_ledger 2" in out and bypass[0] in out and "differences found" in out, out
    code, out, _ = _cli(world, monkeypatch, "--json")
    data = json.loads(out)
    assert code == 1 and data["counts"]["unknown_to_ledger"] == 2 and data["run_id"] is not None
    assert {d["task_id"] for d in data["differences"]} == set(bypass)
    assert {d["api_key_name"] for d in data["differences"]} == {AK}
    code, out, _ = _cli(world, monkeypatch, "--fix")
    assert code == 0 and "recorded 2 late charge(s)" in out and "clean" in out
    code, out, _ = _cli(world, monkeypatch, "--json")
    assert code == 0 and json.loads(out)["clean"] is True


def test_cli_errors_are_one_line(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _out, err = _cli(world, monkeypatch, "--since", "yesterday")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    code, _out, err = _cli(world, monkeypatch, "--tolerance", "-1")
    assert code == 2 and err.startswith("error: ")


def test_tasks_reserved_long_before_the_period_are_found_by_task_id(world: World) -> None:
    from datetime import UTC, datetime

    world.clock.advance(2 * 86400)  # Kling bills two days after the ledger reserved
    guarded, bypass = _traffic(world)
    now = datetime.now(UTC)
    with world.kling() as client:
        result = reconcile(
            world.ledger, client, since=now + timedelta(days=1, hours=12), until=now + timedelta(days=3)
        )
    assert result.counts["matched"] == len(guarded) and result.counts["not_billed"] == 0
    assert {d.task_id for d in result.differences} == set(bypass)
