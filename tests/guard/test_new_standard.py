"""The guard on Kling's new standard, over HTTP against the simulator, on both ledger backends
and both twins: the idempotency key travels as ``options.external_task_id``, tasks are found
again by ``external_task_ids``, settlement commits ``billing[]`` in the budget's unit (cash is
never counted as units), motion control commits on its output, failed tasks are released."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_cost.kling import KlingTask, NewStandardTask
from kling_cost.simulator import Balance
from tests.guard.conftest import World

PROMPT = "a red fox in snow"
KLING_3_NEW = {"prompt": PROMPT, "settings": {"resolution": "1080p", "duration": 10}}


def _only_charge(world: World) -> Any:
    [charge] = world.ledger.charges()
    return charge


def _sim_task(world: World, task_id: str) -> Any:
    return world.sim.state.tasks[task_id]


@pytest.mark.parametrize("standard", ["new", "legacy"])
def test_kling_3_1080p_10s_commits_exactly_8_units_on_either_standard(
    any_world: World, standard: str
) -> None:
    any_world.ledger.set_budget("project:film", 20)
    with any_world.guard() as guard:
        if standard == "new":
            task = guard.new_text_to_video("kling-3.0", PROMPT, resolution="1080p", duration=10)
            assert isinstance(task, NewStandardTask) and task.endpoint == "/text-to-video/kling-3.0"
        else:
            task = guard.text_to_video(PROMPT, model_name="kling-v3", mode="pro", duration="10")
            assert isinstance(task, KlingTask)
        [held] = any_world.ledger.reservations()
        assert held.amount == Decimal(8) and held.status == "reserved" and held.task_id == task.task_id
        any_world.finish()
        done = guard.wait(task, poll=0.01)
    assert done.succeeded and done.charged == Decimal(8)
    charge = _only_charge(any_world)
    assert (charge.estimate, charge.actual, charge.task_id) == (Decimal(8), Decimal(8), task.task_id)
    assert (charge.kind, charge.model, charge.mode, charge.duration) == (
        "text2video",
        "kling-3.0" if standard == "new" else "kling-v3",
        "pro",
        10,
    )
    assert charge.metadata["kling_units"] == "8" and charge.metadata["actual_source"] == "kling"
    assert any_world.ledger.usage("project:film").used == Decimal(8)
    sent = _sim_task(any_world, task.task_id)
    assert sent.external_task_id == charge.idempotency_key  # the key went out as Kling's external_task_id
    assert any_world.sim.state.packs["video"].remaining == Decimal(992)


def test_the_key_travels_as_options_external_task_id_and_finds_the_task_again(any_world: World) -> None:
    body = {**KLING_3_NEW, "options": {"external_task_id": "mine-1", "watermark_info": {"enabled": False}}}
    with any_world.guard() as guard:
        task = guard.create("/text-to-video/kling-3.0", body)
        assert task.external_task_id == "mine-1"
        again = guard.create("/text-to-video/kling-3.0", body)  # the same key: never paid twice
        assert again.task_id == task.task_id and len(any_world.tasks) == 1
        any_world.finish()
        found = guard.get_task("/tasks", external_task_id="mine-1")  # settles it on the way
    assert found.succeeded
    assert _only_charge(any_world).idempotency_key == "mine-1"


def test_identical_new_requests_are_deduplicated(any_world: World) -> None:
    with any_world.guard() as guard:
        first = guard.new_text_to_video(
            "kling-3.0",
            "a  red fox in snow",
            resolution="1080p",
            duration=10,
            callback_url="http://127.0.0.1:9/a",
        )
        any_world.finish()
        guard.wait(first, poll=0.01)
        second = guard.new_text_to_video(
            "kling-3.0",
            PROMPT,
            resolution="1080p",
            duration=10,
            external_task_id="other",
            callback_url="http://x/b",
        )
        different = guard.new_text_to_video("kling-3.0", PROMPT, resolution="720p", duration=10)
    assert second.task_id == first.task_id and different.task_id != first.task_id
    assert len(any_world.tasks) == 2
    statuses = sorted(c.status for c in any_world.ledger.charges())
    assert statuses == ["cache_hit", "succeeded"]


def test_settle_pending_finds_a_new_task_by_its_external_id(any_world: World) -> None:
    """A crash between Kling's acceptance and attaching the task: settle finds it by key."""
    with any_world.guard() as guard:
        req = guard.core.prepare("/text-to-video/kling-3.0", dict(KLING_3_NEW))
        held = any_world.ledger.reserve(
            req.amount, ["project:film"], idempotency_key=req.key, metadata=req.metadata,
            unit=req.unit, catalog=req.catalog, catalog_date=req.catalog_date,
        )  # fmt: skip
        with any_world.kling() as kling:
            accepted = kling.create(req.endpoint, req.body)  # ... and the process died here
        any_world.finish()
        report = guard.settle_pending()
    assert report.committed == [held.id] and report.errors == []
    charge = _only_charge(any_world)
    assert (charge.actual, charge.task_id) == (Decimal(8), accepted.task_id)


def test_a_failed_new_task_is_released(any_world: World) -> None:
    any_world.ledger.set_budget("project:film", 8)
    any_world.sim.state.fail_next(1)
    with any_world.guard() as guard:
        task = guard.new_text_to_video("kling-3.0", PROMPT, resolution="1080p", duration=10)
        any_world.finish()
        done = guard.wait(task, poll=0.01)
        assert done.failed and done.billing == []
        again = guard.new_text_to_video("kling-3.0", PROMPT, resolution="1080p", duration=10)  # room is back
    assert any_world.ledger.usage("project:film").used == 0
    [failed] = [c for c in any_world.ledger.charges() if c.task_id == task.task_id]
    assert (failed.status, failed.actual) == ("failed", Decimal(0))
    assert again.task_id != task.task_id


def test_motion_control_is_held_at_its_longest_and_committed_on_its_output(any_world: World) -> None:
    with any_world.guard() as guard:
        task = guard.motion_control(
            "kling-2.6", "https://e.x/me.png", "https://e.x/dance.mp4", character_orientation="image",
            resolution="1080p",
        )  # fmt: skip
        [held] = any_world.ledger.reservations()
        assert held.amount == Decimal(24)  # 0.8 units/s x 30 s
        any_world.finish()
        guard.wait(task, poll=0.01)
    charge = _only_charge(any_world)
    assert (charge.estimate, charge.actual) == (Decimal(24), Decimal(8))  # 10.04 s -> 10 s
    assert charge.metadata["output_duration"] == "10.04"


def _pay_in_cash(world: World, currency: str = "USD") -> None:
    world.sim.state.set_remaining("video", Decimal(0))
    world.sim.state.accounts.balance = Balance(Decimal(100), currency, Decimal("0.2"))


def test_cash_is_committed_at_its_list_price_in_units_never_as_units(any_world: World) -> None:
    _pay_in_cash(any_world)
    with any_world.guard() as guard:
        task = guard.omni_video(
            "kling-o1", [{"type": "feature_video", "url": "https://e.x/clip.mp4"}], "watercolour",
            resolution="1080p", duration=5,
        )  # fmt: skip
        any_world.finish()
        done = guard.wait(task, poll=0.01)
    assert done.units == 0 and done.cash() == {"USD": Decimal("0.672")}
    charge = _only_charge(any_world)
    assert charge.actual == Decimal(6)  # USD 0.84 list / 0.14 per unit; not 0.672 "units"
    assert charge.metadata["kling_cash"] == [
        {"amount": "0.672", "currency": "USD", "list_price": "0.84", "cash_type": "balance"}
    ]
    assert charge.metadata["actual_source"].startswith("kling (cash at its USD list price")
    assert "kling_units" not in charge.metadata


def test_cash_in_another_currency_commits_the_estimate_on_the_output(any_world: World) -> None:
    _pay_in_cash(any_world, "CNY")
    with any_world.guard() as guard:
        task = guard.motion_control(
            "kling-2.6", "https://e.x/me.png", "https://e.x/dance.mp4", character_orientation="video",
            resolution="1080p",
        )  # fmt: skip
        any_world.finish()
        guard.wait(task, poll=0.01)
    charge = _only_charge(any_world)
    assert charge.actual == Decimal(8)  # the catalog's price of the 10 s output, not the 30 s hold
    assert charge.metadata["actual_source"] == "estimate on the output's length (Kling billed cash (CNY))"
    assert charge.metadata["kling_cash"][0]["currency"] == "CNY"


def test_a_legacy_task_paid_by_the_balance_commits_the_estimate(any_world: World) -> None:
    _pay_in_cash(any_world)
    with any_world.guard() as guard:
        task = guard.text_to_video(PROMPT, model_name="kling-v3", mode="pro", duration="10")
        any_world.finish()
        done = guard.wait(task, poll=0.01)
    assert done.final_unit_deduction == 0 and done.paid_in_cash
    charge = _only_charge(any_world)
    assert charge.actual == Decimal(8)  # never the "0" units Kling reports for a balance-paid task
    assert charge.metadata["actual_source"] == "estimate (Kling billed the account balance)"
    assert charge.metadata["kling_balance"] == {"quota": "0.896", "list_price": "1.12"}


def test_a_credits_budget_commits_its_estimate(any_world: World) -> None:
    any_world.ledger.set_budget("project:film", 100, unit="credits")
    with any_world.guard(catalog="kling-app-credits") as guard:
        task = guard.new_text_to_video("kling-3.0", PROMPT, resolution="1080p", duration=10)
        any_world.finish()
        guard.wait(task, poll=0.01)
    charge = _only_charge(any_world)
    assert (charge.unit, charge.actual, charge.metadata["kling_units"]) == ("credits", Decimal(70), "8")


def test_identical_new_requests_in_flight_share_one_task(any_world: World) -> None:
    """Single-flight on the new standard: four callers, one task, three cache hits."""
    any_world.ledger.set_budget("project:film", 20)
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        try:
            with any_world.guard() as guard:
                start.wait()
                task = guard.new_text_to_video("kling-3.0", PROMPT, resolution="1080p", duration=10)
                results.append(guard.wait(task, poll=0.01).task_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    pause = threading.Event()
    while len(any_world.tasks) < 1 and not pause.wait(0.01):
        pass
    pause.wait(0.3)
    any_world.finish()
    for t in threads:
        t.join(20)
    assert not errors, errors
    assert len(any_world.tasks) == 1 and len(set(results)) == 1 and len(results) == 4
    assert sorted(c.status for c in any_world.ledger.charges()) == ["cache_hit"] * 3 + ["succeeded"]
    assert any_world.ledger.usage("project:film").used == 8


def test_a_lost_create_answer_is_found_by_external_id_not_paid_twice(any_world: World) -> None:
    lost: list[str] = []

    def lose_first_answer(request: httpx.Request) -> None:
        if request.method == "POST" and not lost:
            lost.append(request.url.path)
            raise httpx.ReadTimeout("answer lost", request=request)

    with any_world.guard(on_answer=lose_first_answer, cache=False) as guard:
        body = {**KLING_3_NEW, "options": {"external_task_id": "lost-1"}}
        task = guard.create("/text-to-video/kling-3.0", body)  # asked GET /tasks, found it
        any_world.finish()
        guard.wait(task, poll=0.01)
    assert lost == ["/text-to-video/kling-3.0"] and len(any_world.tasks) == 1
    assert _only_charge(any_world).actual == Decimal(8)


def test_a_body_of_the_other_standard_is_refused_before_anything_is_held(world: World) -> None:
    from kling_cost.errors import ConfigurationError, PricingError
    from kling_cost.kling import NewStandardRequest, TextToVideoRequest

    with world.guard() as guard:
        with pytest.raises(PricingError, match="mode is not a field of a new-standard body"):
            guard.create("/text-to-video/kling-3.0", {"prompt": PROMPT, "mode": "pro", "duration": "10"})
        with pytest.raises(ConfigurationError, match="NewStandardRequest"):
            guard.create("/text-to-video/kling-3.0", TextToVideoRequest(prompt=PROMPT))
        with pytest.raises(ConfigurationError, match="model in it"):
            guard.create("text2video", NewStandardRequest(prompt=PROMPT))
    assert world.ledger.reservations() == [] and world.tasks == []
