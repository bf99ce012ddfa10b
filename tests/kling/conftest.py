from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kling_cost.kling import KlingClient, RetryPolicy
from kling_cost.simulator import ManualClock, Simulator, create_app
from tests.servers import AK, API_KEY, SK, serve


@dataclass
class Running:
    url: str
    sim: Simulator
    clock: ManualClock

    def client(self, **kwargs: Any) -> KlingClient:
        kwargs.setdefault("retry", RetryPolicy(base_delay=0))
        return KlingClient(AK, SK, base_url=self.url, **kwargs)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sim.state.refresh()


def start(**settings: Any) -> Iterator[Running]:
    clock = ManualClock()
    settings.setdefault("task_seconds", 10)
    settings.setdefault("failure_rate", 0)
    app = create_app(AK, SK, api_key=API_KEY, clock=clock, **settings)
    with serve(app) as url:
        yield Running(url, app.state.simulator, clock)


@pytest.fixture
def running() -> Iterator[Running]:
    yield from start()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
