"""Item 4 of issue 11 through the guard: an external_task_id reused for a different request is
refused before anything is sent or held; the same request again is still never paid twice."""

from __future__ import annotations

import pytest

from kling_cost import IdempotencyConflict
from tests.guard.conftest import World


@pytest.fixture
def world(any_world: World) -> World:
    """Every test of this module runs on both ledger backends (and with both guards)."""
    return any_world


def test_an_external_task_id_reused_for_another_request_is_refused(world: World) -> None:
    world.ledger.set_budget("project:film", 100)
    world.ledger.set_budget("project:small", 100)
    with world.guard(cache=False) as guard:
        first = guard.text_to_video("keyed", model_name="kling-v1", external_task_id="order-7")
        with pytest.raises(IdempotencyConflict) as info:
            guard.text_to_video("keyed", model_name="kling-v1", mode="pro", external_task_id="order-7")
        assert info.value.differences == (("amount", "1", "3.5"),)
        again = guard.text_to_video("keyed", model_name="kling-v1", external_task_id="order-7")
    with world.guard(cache=False, scopes=["project:small"]) as small, pytest.raises(IdempotencyConflict):
        small.text_to_video("keyed", model_name="kling-v1", external_task_id="order-7")
    assert again.task_id == first.task_id and len(world.tasks) == 1
    assert world.ledger.usage("project:film").reserved == 1
    assert world.ledger.usage("project:small").reserved == 0
