"""What a guarded request records, on both ledger backends: text no ledger can store is
refused before anything is held, and every charge records the fields its estimate used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kling_cost import BudgetGuard, CostAwareKlingClient, ValidationError
from kling_cost.batch import BatchRunner, read_batch
from tests.guard.conftest import SYNC_ONLY, World
from tests.guard.test_batch import ticking

BAD_TEXT = [
    pytest.param({"prompt": "a fox\x00 in snow"}, "prompt", id="nul-prompt"),
    pytest.param({"prompt": "a fox", "model_name": "kling-v1\x00"}, "model_name", id="nul-model"),
    pytest.param({"prompt": "a fox", "negative_prompt": "blur \ud800"}, "negative_prompt", id="surrogate"),
    pytest.param(
        {"prompt": "a fox", "camera_control": {"type": "simple\x00"}}, "camera_control.type", id="nested"
    ),
    pytest.param({"prompt": "a fox", "aspect\x00": "16:9"}, "field name", id="nul-key"),
]


def _nothing_held(world: World) -> None:
    assert world.ledger.reservations() == [] and world.ledger.charges() == []
    assert world.tasks == []  # nothing was sent to Kling


@pytest.mark.parametrize(("body", "field"), BAD_TEXT)
def test_text_no_ledger_can_store_is_refused_before_anything_is_held(
    any_world: World, body: dict[str, Any], field: str
) -> None:
    any_world.ledger.set_budget("project:film", 100)
    with any_world.guard() as guard, pytest.raises(ValidationError) as info:
        guard.create("text2video", {"mode": "std", "duration": "5", **body})
    assert field in str(info.value) and "nothing was reserved or sent" in str(info.value)
    _nothing_held(any_world)


@SYNC_ONLY
def test_seed_client_refuses_nul_before_anything_is_held(any_world: World) -> None:
    budget = BudgetGuard(daily_limit=100, ledger=any_world.ledger)
    with any_world.kling() as kling, pytest.raises(ValidationError, match="prompt"):
        CostAwareKlingClient(kling, budget).text_to_video("a fox\x00", duration=5)
    _nothing_held(any_world)


def test_hints_with_nul_are_refused(any_world: World) -> None:
    with any_world.guard() as guard, pytest.raises(ValidationError, match=r"hints\.model"):
        guard.extend_video("vid-1", "more", hints={"model": "kling-v1\x00", "mode": "std"})
    _nothing_held(any_world)


@pytest.mark.parametrize(
    ("catalog", "actual"), [("kling-app-credits", 70), ("kling-api", 7)], ids=["credits", "units"]
)
@SYNC_ONLY
def test_a_batch_without_model_records_the_model_kling_ran(
    any_world: World, tmp_path: Path, catalog: str, actual: int
) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "one"}\n{"prompt": "two", "mode": "professional", "duration": 10}\n')
    rows = read_batch(file, {"mode": "pro", "duration": 10})
    with any_world.guard(catalog=catalog) as guard:
        runner = BatchRunner(guard, rows, concurrency=2, poll=0.01, backoff=0.01)
        with ticking(any_world):
            summary = runner.run()
    assert summary.count("done") == 2
    charges = any_world.ledger.charges()
    assert [(c.model, c.mode, c.duration, c.audio, c.actual) for c in charges] == [
        ("kling-v1", "pro", 10, False, actual)
    ] * 2
    assert {c.metadata["model"] for c in charges} == {"kling-v1"}


def test_guarded_create_records_normalised_fields(any_world: World) -> None:
    with any_world.guard(catalog="kling-app-credits") as guard:
        task = guard.create("t2v", {"prompt": "a fox", "mode": "standard", "duration": 10})
        any_world.finish()
        guard.wait(task, poll=0.01)
    [charge] = any_world.ledger.charges()
    assert (charge.kind, charge.model, charge.mode, charge.duration, charge.audio) == (
        "text2video",
        "kling-v1",
        "std",
        10,
        False,
    )
    assert charge.actual == 20 and charge.prompt_preview == "a fox"


@SYNC_ONLY
def test_seed_client_records_what_it_estimated(any_world: World) -> None:
    budget = BudgetGuard(daily_limit=100, ledger=any_world.ledger)
    with any_world.kling() as kling:
        client = CostAwareKlingClient(kling, budget)
        client.text_to_video("a red fox", duration=10, mode="standard")
        client.text_to_video("a blue fox", model_name="kling-v2-6", duration=5, mode="professional")
    first, second = any_world.ledger.charges()
    assert (first.kind, first.model, first.mode, first.duration, first.actual) == (
        "text2video",
        "kling-v1",
        "std",
        10,
        20,
    )
    assert (second.model, second.mode, second.duration, second.actual) == ("kling-v2-6", "pro", 5, 35)
    assert first.prompt_preview == "a red fox" and second.prompt_preview == "a blue fox"
