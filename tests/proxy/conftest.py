"""A proxy in front of the simulator, both served over loopback HTTP, on each ledger backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from kling_cost.kling.client import KlingClient
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.proxy.keys import IssuedKey, Keys, MasterKey
from kling_cost.proxy.server import ProxyConfig, build_app
from kling_cost.simulator import create_app
from kling_cost.simulator.clock import ManualClock
from tests.servers import AK, API_KEY, SK, free_port, serve

MASTER = MasterKey(b"proxy-tests-master-key-0123456789abcdef", "tests")


@dataclass
class Proxied:
    """The simulator (Kling), a ledger, and a proxy in front of Kling on that ledger."""

    kling: str
    url: str
    sim: Any
    clock: ManualClock
    ledger: Ledger
    keys: Keys
    app: Any
    clients: list[KlingClient] = field(default_factory=list)

    def key(self, name: str, budget: str | None = None, **options: Any) -> IssuedKey:
        issued = self.keys.create(name, **options)
        if budget is not None:
            self.ledger.set_budget(f"key:{name}", budget, "day", unit=issued.record.unit)
        return issued

    def client(self, key: IssuedKey, *, bearer: bool = False) -> KlingClient:
        if bearer:
            made = KlingClient(api_key=key.api_key, base_url=self.url, timeout=10)
        else:
            made = KlingClient(key.access_key, key.secret_key, base_url=self.url, timeout=10)
        self.clients.append(made)
        return made

    def http(self, method: str, path: str, key: IssuedKey | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key.api_key}"
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def finish(self, seconds: float = 11) -> None:
        """Let every running task end (Kling's side)."""
        self.clock.advance(seconds)
        self.sim.state.refresh()

    @property
    def tasks(self) -> list[Any]:
        return list(self.sim.state.tasks.values())

    def settle(self) -> None:
        """One pass of the proxy's background settler."""
        import asyncio

        from kling_cost.proxy.settler import ProxySettler

        pass_ = ProxySettler(self.app.state.service).settle_once()
        asyncio.run_coroutine_threadsafe(pass_, self.app.state.loop).result(20)


@contextmanager
def make_proxied(ledger_url: str, monkeypatch: pytest.MonkeyPatch, **config: Any) -> Iterator[Proxied]:
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    clock = ManualClock()
    sim_app = create_app(
        AK, SK, api_key=API_KEY, clock=clock, task_seconds=10, failure_rate=0, concurrency=100
    )
    ledger = open_ledger(ledger_url)
    port = free_port()
    try:
        with serve(sim_app) as kling:
            settings = {"background": False, **config}
            if settings.pop("public", False):
                settings["public_url"] = f"http://127.0.0.1:{port}"
            app = build_app(
                ProxyConfig(upstream=kling, ledger=ledger_url, **settings), ledger=ledger, master=MASTER
            )
            with serve(app, port) as url:
                world = Proxied(kling, url, sim_app.state.simulator, clock, ledger, Keys(ledger, MASTER), app)
                try:
                    yield world
                finally:
                    for made in world.clients:
                        made.close()
    finally:
        ledger.close()


@pytest.fixture
def proxied(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    with make_proxied(ledger_url, monkeypatch) as world:
        yield world
