"""Running the proxy: one process or several (``--workers``), over one ledger.

:func:`build_app` puts a proxy together from a :class:`ProxyConfig` (what ``kling-cost proxy``
was given). With several workers uvicorn imports :func:`app_from_env` in each process; the
configuration travels in ``KLING_COST_PROXY_CONFIG`` (no secret in it: Kling's credentials and
the master key stay in the environment each worker inherits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette

from ..errors import ConfigurationError
from ..guard import AsyncCostAwareClient
from ..kling.async_client import AsyncKlingClient
from ..ledger import Ledger, open_ledger
from .app import ProxyApp
from .keys import Keys, MasterKey
from .metrics import ProxyMetrics, SpendHook
from .relay import Relayer
from .service import MAX_BODY_BYTES, ProxyService, ProxySettings
from .settler import ProxySettler
from .timing import TimedTransport
from .upstream import Upstream

__all__ = ["ENV_CONFIG", "ProxyConfig", "app_from_env", "build_app", "metrics_token_from_env"]

ENV_CONFIG = "KLING_COST_PROXY_CONFIG"
log = logging.getLogger("kling_cost.proxy")


@dataclass(frozen=True)
class ProxyConfig:
    """Everything ``kling-cost proxy`` needs besides secrets."""

    upstream: str
    ledger: str
    public_url: str | None = None
    callback_secret_env: str | None = None
    """The name of the environment variable holding Kling's webhook secret (not the secret)."""
    metrics_token_env: str | None = None
    """The name of the environment variable holding the token ``/metrics`` asks for."""
    allow_unpriced: bool = False
    allow_callback_hosts: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    upstream_timeout: float = 60.0
    settle_interval: float = 15.0
    relay_interval: float = 2.0
    client_timeout: float = 60.0
    background: bool = True
    """Run the settler and the callback relay in this process."""
    reservation_ttl: float = 1800.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ProxyConfig:
        raw = json.loads(os.environ[ENV_CONFIG])
        raw["allow_callback_hosts"] = tuple(raw.get("allow_callback_hosts") or ())
        return cls(**raw)


def metrics_token_from_env(variable: str | None) -> str | None:
    """The token ``/metrics`` asks for, from the environment variable named ``variable``; a
    named variable that is unset or blank is an error (never an open ``/metrics`` instead)."""
    if variable is None:
        return None
    if not variable.strip():
        raise ConfigurationError(
            "--metrics-token-env needs the name of an environment variable (e.g. KLING_COST_METRICS_TOKEN)"
        )
    token = os.environ.get(variable, "").strip()
    if not token:
        raise ConfigurationError(f"--metrics-token-env {variable}: that environment variable is not set")
    if any((c < " " and c != "\t") or c == "\x7f" for c in token):
        raise ConfigurationError(
            f"--metrics-token-env {variable}: the token holds a line break or another control "
            "character, which no Authorization header can carry"
        )
    return token


def build_app(
    config: ProxyConfig, *, ledger: Ledger | None = None, master: MasterKey | None = None
) -> Starlette:
    """The proxy's ASGI app. ``ledger`` and ``master`` default to ``config.ledger`` and
    :meth:`MasterKey.load`; the Kling credentials come from the environment."""
    metrics_token = metrics_token_from_env(config.metrics_token_env)  # first: a bad one opens nothing
    own_ledger = ledger is None
    led = ledger if ledger is not None else open_ledger(config.ledger)
    master_key = master if master is not None else MasterKey.load(create=False)
    secret = os.environ.get(config.callback_secret_env) if config.callback_secret_env else None
    settings = ProxySettings(
        public_url=config.public_url,
        callback_secret=secret,
        allow_unpriced=config.allow_unpriced,
        allow_callback_hosts=config.allow_callback_hosts,
        max_body_bytes=config.max_body_bytes,
        settle_interval=config.settle_interval,
        relay_interval=config.relay_interval,
        client_timeout=config.client_timeout,
        metrics_token=metrics_token,
    )
    timeout = httpx.Timeout(config.upstream_timeout, connect=10.0)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    transport = TimedTransport(httpx.AsyncHTTPTransport(limits=limits))
    http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
    kling = AsyncKlingClient(base_url=config.upstream, http_client=http, validate=False)
    ttl = timedelta(seconds=config.reservation_ttl)
    guards = {
        "units": AsyncCostAwareClient(kling, led, catalog="kling-api", cache=False, ttl=ttl),
        "credits": AsyncCostAwareClient(kling, led, catalog="kling-app-credits", cache=False, ttl=ttl),
    }
    service = ProxyService(led, Keys(led, master_key), guards, settings)
    upstream = Upstream(kling, http)

    async def ready() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            await anyio.to_thread.run_sync(led.budgets)
            checks["ledger"] = "ok"
        except Exception as exc:
            checks["ledger"] = f"unavailable: {type(exc).__name__}"
        try:
            await http.get(config.upstream.rstrip("/") + "/", timeout=5.0)
            checks["upstream"] = "ok"
        except httpx.HTTPError as exc:
            checks["upstream"] = f"unreachable: {type(exc).__name__}"
        return checks

    metrics = ProxyMetrics()
    led.hooks.append(SpendHook(metrics))

    def observe(
        route: str, method: str, status: int, total: float, upstream: float, reason: str | None
    ) -> None:
        metrics.request(route, method, status)
        if reason is not None:
            metrics.refusal(reason)
        if upstream > 0:
            metrics.upstream_seconds(route, upstream)
        metrics.added_seconds(route, max(0.0, total - upstream))

    async def scrape(accept: str | None) -> tuple[bytes, str]:
        result: tuple[bytes, str] = await anyio.to_thread.run_sync(metrics.render, led, accept)
        return result

    proxy = ProxyApp(service, upstream, ready=ready, observe=observe, metrics=scrape)

    relayer = Relayer(led, master_key, allowed_hosts=config.allow_callback_hosts)
    service.on_relay = relayer.wake

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # where the proxy's clients live
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            if config.background:
                tasks.start_soon(ProxySettler(service).run, config.settle_interval)
                tasks.start_soon(relayer.run, stop, config.relay_interval)
            try:
                yield
            finally:
                stop.set()
                tasks.cancel_scope.cancel()
        await relayer.aclose()
        await http.aclose()
        if own_ledger:
            led.close()

    app = proxy.build(lifespan=lifespan)
    app.state.proxy = proxy
    app.state.service = service
    app.state.relayer = relayer
    return app


def app_from_env() -> Starlette:
    """The app of one worker process (uvicorn's factory with ``--workers``)."""
    return build_app(ProxyConfig.from_env())
