"""Many coroutines of one event loop against one budget, through the async guard: the ceiling
holds exactly (each ledger call runs in a worker thread, so they really race), refusals carry
their data across the thread boundary, and nothing is left held (both backends)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import anyio
import pytest

from kling_cost import BudgetExceeded
from kling_cost.guard import AsyncCostAwareClient
from kling_cost.kling import AsyncKlingClient, RetryPolicy
from tests.guard.conftest import World
from tests.servers import AK, SK

COROUTINES = 50


class Ceiling:
    """A hook checking, inside every reservation's transaction, that no window went past its limit."""

    def __init__(self) -> None:
        self.levels: list[int] = []

    def after_reserve(self, cur: Any, now: Any, reservation: Any, states: Sequence[Any]) -> None:
        for state in states:
            assert state.used_milli + state.reserved_milli <= state.budget.limit_milli
            if state.budget.scope == "project:film":
                self.levels.append(state.used_milli + state.reserved_milli)

    def after_settle(self, *args: Any) -> None: ...
    def after_budget_set(self, *args: Any) -> None: ...
    def after_refusal(self, *args: Any) -> None: ...


@pytest.mark.parametrize("twin", ["async"])
def test_fifty_coroutines_never_overspend_one_budget(any_world: World) -> None:
    ledger = any_world.ledger
    ledger.set_budget("project:film", 7)  # seven 1-unit clips fit, not one more
    ceiling = Ceiling()
    ledger.hooks.append(ceiling)
    sent: list[str] = []
    refused: list[BudgetExceeded] = []

    async def one(guard: AsyncCostAwareClient, n: int) -> None:
        try:
            task = await guard.text_to_video(f"shot {n}", model_name="kling-v1")
            sent.append(task.task_id)
        except BudgetExceeded as exc:
            refused.append(exc)

    async def main() -> None:
        kling = AsyncKlingClient(AK, SK, base_url=any_world.url, retry=RetryPolicy(base_delay=0))
        guard = AsyncCostAwareClient(kling, ledger, scopes=["project:film"], cache=False)
        async with guard, anyio.create_task_group() as group:
            for n in range(COROUTINES):
                group.start_soon(one, guard, n)

    anyio.run(main)
    assert len(sent) == 7 and len(refused) == COROUTINES - 7
    assert max(ceiling.levels) == 7000 and len(any_world.tasks) == 7
    for exc in refused:  # the error raised in a worker thread, whole
        assert (exc.scope, exc.window, exc.reason, exc.unit) == ("project:film", "day", "limit", "units")
        assert exc.requested == 1 and exc.available < 1 and exc.limit == 7
    usage = ledger.usage("project:film")
    assert (usage.used, usage.reserved) == (0, Decimal(7))
    any_world.finish()
    report = anyio.run(_settle, any_world)
    assert len(report.committed) == 7 and ledger.usage("project:film").used == 7
    assert ledger.usage("project:film").reserved == 0


async def _settle(world: World) -> Any:
    kling = AsyncKlingClient(AK, SK, base_url=world.url, retry=RetryPolicy(base_delay=0))
    async with AsyncCostAwareClient(kling, world.ledger, scopes=["project:film"]) as guard:
        return await guard.settle_pending()
