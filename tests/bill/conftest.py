"""A world for the bill's tests: the simulator on loopback (a manual clock), a ledger on each
backend whose clock shows the same time, and a plain Kling client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from kling_cost.kling import KlingClient, RetryPolicy
from kling_cost.ledger import Ledger
from kling_cost.simulator import ManualClock, Simulator, create_app
from tests.helpers import FakeClock
from tests.ledger.conftest import clock, ledger, ledger_url  # noqa: F401 - the backend matrix
from tests.servers import AK, API_KEY, SK, serve

DAY = 86_400


@dataclass
class Bill:
    url: str
    sim: Simulator
    sim_clock: ManualClock
    ledger: Ledger
    clock: FakeClock

    def kling(self) -> KlingClient:
        return KlingClient(AK, SK, api_key=API_KEY, base_url=self.url, retry=RetryPolicy(base_delay=0))

    def advance(self, seconds: float) -> None:
        """Both clocks move together."""
        self.sim_clock.advance(seconds)
        self.clock.advance(seconds=seconds)
        self.sim.state.refresh()

    def now_ms(self) -> int:
        return int(self.sim_clock.now() * 1000)


def make_bill(led: Ledger, fake: FakeClock, **settings: Any) -> Iterator[Bill]:
    sim_clock = ManualClock(start=fake().timestamp())
    settings.setdefault("task_seconds", 10)
    app = create_app(AK, SK, api_key=API_KEY, clock=sim_clock, failure_rate=0, **settings)
    with serve(app) as base:
        yield Bill(base, app.state.simulator, sim_clock, led, fake)


@pytest.fixture
def bill(ledger: Ledger, clock: FakeClock) -> Iterator[Bill]:  # noqa: F811
    yield from make_bill(ledger, clock, video_units=0, image_units=0, tryon_units=0)


@pytest.fixture
def lagging(ledger: Ledger, clock: FakeClock) -> Iterator[Bill]:  # noqa: F811
    yield from make_bill(ledger, clock, video_units=100, costs_lag=timedelta(hours=12))
