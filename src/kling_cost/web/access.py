"""Who may read the dashboard: loopback by default; elsewhere only with the token.

Every request must first name the dashboard in its ``Host`` header (:class:`HostGate`): a
loopback name (``localhost``, ``127.0.0.1`` or any 127.x address, ``[::1]``; any port), the
specific address it is bound to, or a name given with ``allowed_hosts`` (``--allowed-host``).
Anything else answers 421 with no data. This defeats DNS rebinding: a web page on
``evil.example`` whose name is re-pointed at 127.0.0.1 reaches the server, but its requests
carry ``Host: evil.example``.

A dashboard bound to a non-loopback address, or given a token, checks the token on every
request (the page, its static files and every ``/api`` call): an ``Authorization: Bearer``
header, the ``kling_cost_token`` cookie, or ``?token=`` (the page then sets the cookie so its
own API calls carry it). A non-loopback dashboard without a configured token answers 401 to
everyone: it fails closed.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "COOKIE",
    "HostGate",
    "TokenGate",
    "hide_tokens_in_access_log",
    "host_name",
    "is_loopback",
    "normalise_host",
]

COOKIE = "kling_cost_token"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ``::1`` are loopback; every other address is not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_PORT = re.compile(r"^:[0-9]{1,5}$")
_NAME = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?)$")
WILDCARDS = ("0.0.0.0", "::", "")


def host_name(header: str | None) -> str | None:
    """The lower-case name of a ``Host`` header without its port (``[::1]`` keeps its
    brackets); ``None`` when the header is missing or malformed."""
    if not header:
        return None
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        name, rest = (text[: end + 1], text[end + 1 :]) if end > 0 else ("", "")
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
    if not name or not _NAME.match(name) or (rest and not _PORT.match(rest)):
        return None
    return name


def normalise_host(value: str) -> str:
    """A configured host name (``dash.example.com``, ``10.0.0.5``, ``::1`` or ``[::1]``), as
    :func:`host_name` reports it; raises :class:`ConfigurationError` for anything else."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if ":" in text and not text.startswith("["):
        try:
            text = f"[{ipaddress.IPv6Address(text)}]"
        except ValueError:
            text = ""
    name = host_name(text)
    if name is None or name != text:
        raise ConfigurationError(
            f"allowed host {value!r} is not a host name; give a name or address without scheme, "
            "port or path, e.g. dash.example.com"
        )
    return name


def _bound_name(bound_host: str) -> str | None:
    """The name a client uses for a specific bound address (``None`` for wildcards)."""
    text = bound_host.strip().strip("[]").lower()
    if text in WILDCARDS:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    return f"[{address}]" if address.version == 6 else str(address)


class HostGate:
    """ASGI middleware: 421 unless the ``Host`` header names this dashboard (see the module)."""

    def __init__(self, app: Any, *, bound_host: str, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        names = {normalise_host(h) for h in allowed_hosts}
        bound = _bound_name(bound_host)
        if bound is not None:
            names.add(bound)
        self.allowed = frozenset(names)

    def allows(self, header: str | None) -> bool:
        name = host_name(header)
        if name is None:
            return False
        return name in self.allowed or is_loopback(name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        raw = headers.get(b"host")
        header = None if raw is None else raw.decode("latin-1")
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if header is None:
            status, text = 400, "the request has no Host header"
        else:
            status, text = (
                421,
                (
                    f"Host {header[:100]!r} is not a name of this dashboard; open it by a loopback "
                    "name, or start it with --allowed-host NAME"
                ),
            )
        body = json.dumps({"error": text}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _cookie(headers: dict[bytes, bytes]) -> str | None:
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _query_token(query: bytes) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(query.decode("latin-1")).get("token")
    return str(values[-1]) if values else None


def supplied_token(scope: dict[str, Any]) -> str | None:
    headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return str(auth[7:].strip())
    return _query_token(scope.get("query_string", b"")) or _cookie(headers)


class TokenGate:
    """ASGI middleware: 401 unless the request may read the dashboard."""

    def __init__(self, app: Any, *, token: str | None, bound_host: str) -> None:
        self.app = app
        self.token = token
        self.required = token is not None or not is_loopback(bound_host)

    def allowed(self, scope: dict[str, Any]) -> bool:
        if not self.required:
            return True
        given = supplied_token(scope)
        if self.token is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        body = b'{"error": "unauthorized: this dashboard needs its access token"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="kling-cost"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#\s]*", re.IGNORECASE)


class _HideTokens(logging.Filter):
    """uvicorn's access log writes each request's path with its query (``GET /?token=T``, at
    INFO): the dashboard token is a credential, so it is logged as ``token=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "token=" in a.lower() for a in record.args
        ):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


_ACCESS_FILTER = _HideTokens()


def hide_tokens_in_access_log() -> None:
    """Install the filter on ``uvicorn.access`` (once: a logger keeps one copy of a filter)."""
    logging.getLogger("uvicorn.access").addFilter(_ACCESS_FILTER)
