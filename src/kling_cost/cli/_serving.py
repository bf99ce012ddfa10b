"""Serving an ASGI app from the CLI (``serve``, ``simulate``): the port is taken before anything
is announced, so a port in use is one line and exit 2, never "started" followed by a failure."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from ._common import EXIT_ERROR, fail

__all__ = ["listen", "require_server", "run_server", "url_host"]


def require_server(what: str) -> None:
    """One line and exit 2 when uvicorn or starlette is missing. Both are dependencies of
    klingai-cost-controls (the demo, the simulator and the dashboard serve HTTP), so only a
    damaged environment lacks them; the line says which one and how to put it back."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        name = (exc.name or "uvicorn").partition(".")[0]
        fail(
            f"{what} needs {name}, a dependency of klingai-cost-controls missing from this "
            f"environment: pip install {name}"
        )


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it), or one line on stderr and exit 2
    (a port in use, a port below 1024 without privileges, an address this machine lacks)."""
    if not 0 <= port <= 65535:
        fail(f"--port {port} is not a TCP port; pick one from 1 to 65535")
    name = host.strip().strip("[]")
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so; without it every
    # answer after the first on a keep-alive connection waits ~40 ms for a delayed ACK.
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((name, port))
    except (OSError, UnicodeError) as exc:
        sock.close()
        if isinstance(exc, (socket.gaierror, UnicodeError)):
            fail(f"--host {host!r} is not an address of this machine; use e.g. 127.0.0.1")
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is already in use; pick another with --port")
        if exc.errno == errno.EACCES:
            fail(
                f"no permission to listen on port {port} (ports below 1024 need privileges); "
                "pick another with --port"
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            fail(f"--host {host!r} is not an address of this machine; use e.g. 127.0.0.1")
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    """How a URL names ``host``: wildcards as 127.0.0.1, IPv6 addresses in brackets."""
    name = host.strip().strip("[]")
    if name in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{name}]" if ":" in name else name


def run_server(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C/SIGTERM; exit 1 if uvicorn could not start."""
    import uvicorn

    level = os.environ.get("KLING_COST_LOG_LEVEL", "warning")
    server = uvicorn.Server(uvicorn.Config(app, log_level=level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started and not server.should_exit:
        fail("the server stopped before it started; set KLING_COST_LOG_LEVEL=info to see why", EXIT_ERROR)
