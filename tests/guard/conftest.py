"""A world for guard tests: the simulator on loopback, a ledger, and guarded clients of either
twin (with AK/SK for the legacy standard and an API key for the new one). ``world`` and ``any_world`` run each test with the sync guard and with the async one
(driven from the test's thread through an anyio blocking portal); a test or module about the
sync guard only (batches, the CLI, the seed's API) overrides ``twin`` with ``SYNC_ONLY``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio.to_thread
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from kling_cost.cache import CachePolicy
from kling_cost.guard import AsyncCostAwareClient, CostAwareClient
from kling_cost.kling import AsyncKlingClient, KlingClient, RetryPolicy
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.simulator import ManualClock, Simulator, create_app
from tests.helpers import fresh_postgres_url, need_postgres
from tests.servers import AK, API_KEY, SK, serve

TWINS = ("sync", "async")
SYNC_ONLY = pytest.mark.parametrize("twin", ["sync"])
"""For a test about the sync guard only: overrides the ``twin`` fixture (one run)."""

Hook = Callable[[httpx.Request], None]
"""Called (in a worker thread for the async twin) once Kling's answer to a request arrived;
it may block (a late answer) or raise (a lost one)."""


class _HookedTransport(httpx.HTTPTransport):
    def __init__(self, hook: Hook) -> None:
        super().__init__()
        self.hook = hook

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        try:
            self.hook(request)
        except BaseException:
            response.close()
            raise
        return response


class _AsyncHookedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, hook: Hook) -> None:
        super().__init__()
        self.hook = hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        try:
            await anyio.to_thread.run_sync(self.hook, request)
        except BaseException:
            await response.aclose()
            raise
        return response


class Blocking:
    """The async guard with the sync guard's face: each coroutine method runs on ``portal``'s
    event loop and is waited for, so one test body drives either twin."""

    def __init__(self, target: Any, portal: BlockingPortal) -> None:
        self._target = target
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not inspect.iscoroutinefunction(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._portal.call(functools.partial(value, *args, **kwargs))

        return call

    def close(self) -> None:
        self._portal.call(self._target.aclose)

    def __enter__(self) -> Blocking:
        self._portal.call(self._target.__aenter__)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._portal.call(self._target.__aexit__, *exc)


@dataclass
class World:
    """A simulator on loopback (manual clock), a ledger, and guarded clients."""

    url: str
    sim: Simulator
    clock: ManualClock
    ledger: Ledger
    ledger_url: str
    twin: str = "sync"
    portal: BlockingPortal | None = None
    cleanup: ExitStack = field(default_factory=ExitStack)

    def kling(self) -> KlingClient:
        """A plain sync Kling client (whatever the twin): what a test does behind the guard."""
        return KlingClient(AK, SK, api_key=API_KEY, base_url=self.url, retry=RetryPolicy(base_delay=0))

    def guard(
        self,
        *,
        ledger: Ledger | None = None,
        url: str | None = None,
        on_answer: Hook | None = None,
        **kwargs: Any,
    ) -> CostAwareClient:
        """A guard of this world's twin on ``ledger`` (default: the world's), talking to ``url``
        (default: the simulator); ``on_answer`` runs once each answer from Kling arrived."""
        kwargs.setdefault("cache", CachePolicy(wait_poll=0.01))
        kwargs.setdefault("scopes", ["project:film"])
        options: dict[str, Any] = {"base_url": url or self.url, "retry": RetryPolicy(base_delay=0)}
        if self.twin == "sync":
            if on_answer is not None:
                options["http_client"] = self.cleanup.enter_context(
                    httpx.Client(transport=_HookedTransport(on_answer))
                )
            return CostAwareClient(
                KlingClient(AK, SK, api_key=API_KEY, **options), ledger or self.ledger, **kwargs
            )
        portal = self.portal
        assert portal is not None
        if on_answer is not None:
            http = httpx.AsyncClient(transport=_AsyncHookedTransport(on_answer))
            self.cleanup.callback(portal.call, http.aclose)
            options["http_client"] = http
        kling = AsyncKlingClient(AK, SK, api_key=API_KEY, **options)
        guard = AsyncCostAwareClient(kling, ledger or self.ledger, **kwargs)
        return cast(CostAwareClient, Blocking(guard, portal))

    def finish(self, seconds: float = 11) -> None:
        """Let every running task end."""
        self.clock.advance(seconds)
        self.sim.state.refresh()

    @property
    def tasks(self) -> list[Any]:
        return list(self.sim.state.tasks.values())


@contextmanager
def make_world(url: str, twin: str = "sync") -> Iterator[World]:
    clock = ManualClock()
    app = create_app(AK, SK, api_key=API_KEY, clock=clock, task_seconds=10, failure_rate=0, concurrency=20)
    ledger = open_ledger(url)
    try:
        with serve(app) as base, ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal()) if twin == "async" else None
            world = World(base, app.state.simulator, clock, ledger, url, twin, portal)
            with world.cleanup:
                yield world
    finally:
        ledger.close()


@pytest.fixture(params=TWINS)
def twin(request: pytest.FixtureRequest) -> str:
    """Which guard a world's ``guard()`` builds: ``sync`` or ``async``."""
    return str(request.param)


@pytest.fixture
def world(tmp_path: Path, twin: str) -> Iterator[World]:
    with make_world(f"sqlite:///{tmp_path / 'guard.db'}", twin) as made:
        yield made


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    ]
)
def any_world(request: pytest.FixtureRequest, tmp_path: Path, twin: str) -> Iterator[World]:
    """:func:`world` on each ledger backend (SQLite and PostgreSQL)."""
    if request.param == "sqlite":
        with make_world(f"sqlite:///{tmp_path / 'guard.db'}", twin) as made:
            yield made
        return
    need_postgres()
    url = fresh_postgres_url()
    try:
        with make_world(url, twin) as made:
            yield made
    finally:
        cleanup = open_ledger(url)
        cleanup.backend.drop_schema()  # type: ignore[attr-defined]
        cleanup.close()
