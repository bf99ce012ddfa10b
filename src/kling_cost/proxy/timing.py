"""How long each proxied request waited on Kling: the proxy's own added latency is the rest.

The proxy's HTTP client sends through :class:`TimedTransport`, which adds the time of every
upstream exchange (until Kling's answer headers) to the current request's
:data:`UPSTREAM_SECONDS` (a context variable set per request: the guard's calls, however deep,
run in the request's context).
"""

from __future__ import annotations

import time
from contextvars import ContextVar

import httpx

__all__ = ["UPSTREAM_SECONDS", "Stopwatch", "TimedTransport"]


class Stopwatch:
    """Seconds spent upstream by one request."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


UPSTREAM_SECONDS: ContextVar[Stopwatch | None] = ContextVar("kling_cost_upstream_seconds", default=None)


class TimedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that times each exchange into the request's :class:`Stopwatch`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            return await self.inner.handle_async_request(request)
        finally:
            watch = UPSTREAM_SECONDS.get()
            if watch is not None:
                watch.seconds += time.perf_counter() - started

    async def aclose(self) -> None:
        await self.inner.aclose()
