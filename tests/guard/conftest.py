from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kling_cost.cache import CachePolicy
from kling_cost.guard import CostAwareClient
from kling_cost.kling import KlingClient, RetryPolicy
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.simulator import ManualClock, Simulator, create_app
from tests.helpers import fresh_postgres_url, need_postgres
from tests.servers import AK, SK, serve


@dataclass
class World:
    """A simulator on loopback (manual clock), a ledger, and guarded clients."""

    url: str
    sim: Simulator
    clock: ManualClock
    ledger: Ledger
    ledger_url: str

    def kling(self) -> KlingClient:
        return KlingClient(AK, SK, base_url=self.url, retry=RetryPolicy(base_delay=0))

    def guard(self, **kwargs: Any) -> CostAwareClient:
        kwargs.setdefault("cache", CachePolicy(wait_poll=0.01))
        kwargs.setdefault("scopes", ["project:film"])
        return CostAwareClient(self.kling(), self.ledger, **kwargs)

    def finish(self, seconds: float = 11) -> None:
        """Let every running task end."""
        self.clock.advance(seconds)
        self.sim.state.refresh()

    @property
    def tasks(self) -> list[Any]:
        return list(self.sim.state.tasks.values())


@contextmanager
def make_world(url: str) -> Iterator[World]:
    clock = ManualClock()
    app = create_app(AK, SK, clock=clock, task_seconds=10, failure_rate=0, concurrency=20)
    ledger = open_ledger(url)
    try:
        with serve(app) as base:
            yield World(base, app.state.simulator, clock, ledger, url)
    finally:
        ledger.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(f"sqlite:///{tmp_path / 'guard.db'}") as made:
        yield made


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    ]
)
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """:func:`world` on each ledger backend (SQLite and PostgreSQL)."""
    if request.param == "sqlite":
        with make_world(f"sqlite:///{tmp_path / 'guard.db'}") as made:
            yield made
        return
    need_postgres()
    url = fresh_postgres_url()
    try:
        with make_world(url) as made:
            yield made
    finally:
        cleanup = open_ledger(url)
        cleanup.backend.drop_schema()  # type: ignore[attr-defined]
        cleanup.close()
