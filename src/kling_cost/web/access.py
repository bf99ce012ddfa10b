"""Who may read the dashboard: loopback by default; elsewhere only with the token.

A dashboard bound to a non-loopback address, or given a token, checks the token on every
request (the page, its static files and every ``/api`` call): an ``Authorization: Bearer``
header, the ``kling_cost_token`` cookie, or ``?token=`` (the page then sets the cookie so its
own API calls carry it). A non-loopback dashboard without a configured token answers 401 to
everyone: it fails closed.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

__all__ = ["COOKIE", "TokenGate", "is_loopback"]

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
