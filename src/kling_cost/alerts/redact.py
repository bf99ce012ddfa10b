"""Keeping sink credentials out of everything an alert leaves behind.

A sink URL often *is* a credential: a webhook token in the path (``/api/webhooks/123/TOKEN``,
Slack's ``/services/T/B/X``), a ``token=``/``key=`` query value, a password in ``user:pass@``.
What is stored (``alerts.sent_to``, ``last_error``), logged, listed or served names a sink by
its kind, scheme and host only (:func:`sink_label`), and says why a delivery failed in a few
words (:func:`transport_reason`, ``HTTP 500 Internal Server Error``), never with the
receiver's answer. :class:`Scrubber` removes a sink's secret pieces from any other text as a
last line of defence, and :func:`scrub_urls` shortens every URL in a text to scheme and host
(for rows written before this rule).
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "MAX_REASON",
    "Scrubber",
    "origin",
    "public_alert",
    "scrub_urls",
    "sink_label",
    "transport_reason",
]

MAX_REASON = 200
"""Longest failure reason kept per sink."""

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,30})://([^\s/?#'\"<>]*)[^\s'\"<>]*")
_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EPIPE: "connection closed",
}


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no user, password, path, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + ("" if port is None else f":{port}")


def sink_label(kind: str, url: str) -> str:
    """A sink's stored and shown name: ``webhook:https://hooks.example.com``."""
    return f"{kind}:{origin(url)}"


def scrub_urls(text: str) -> str:
    """Every URL in ``text`` cut down to its scheme and host (user, password, path and query
    dropped)."""

    def cut(match: re.Match[str]) -> str:
        host = match.group(2).rsplit("@", 1)[-1]
        return f"{match.group(1)}://{host}"

    return _URL.sub(cut, text)


def public_alert(data: dict[str, Any]) -> dict[str, Any]:
    """An alert's ``to_dict()`` as listed and served: URLs in ``last_error`` and ``sent_to``
    cut to scheme and host (rows stored before sink names were redacted may hold tokens)."""
    out = dict(data)
    if isinstance(out.get("last_error"), str):
        out["last_error"] = scrub_urls(out["last_error"])
    if isinstance(out.get("sent_to"), list):
        out["sent_to"] = [scrub_urls(str(s)) for s in out["sent_to"]]
    return out


class Scrubber:
    """Replaces a sink's secret pieces (password, path segments, query values, the URL
    itself) with ``***`` in any text, then shortens any URL left (:func:`scrub_urls`)."""

    def __init__(self, urls: Iterable[str] = (), secrets: Iterable[str | None] = ()) -> None:
        pieces: set[str] = set()
        for url in urls:
            pieces.update(_secret_pieces(url))
        pieces.update(s for s in secrets if s and len(s) >= 3)
        self.pieces = sorted(pieces, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for piece in self.pieces:
            text = text.replace(piece, "***")
        return scrub_urls(text)


def _secret_pieces(url: str) -> set[str]:
    pieces = {url}
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return pieces
    if password:
        pieces.update({password, unquote(password)})
    if parts.netloc:
        pieces.add(parts.netloc)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(rest) > 1:
        pieces.update({rest, unquote(rest)})
    for segment in parts.path.split("/"):
        if len(segment) >= 6:
            pieces.update({segment, unquote(segment)})
    for _, value in parse_qsl(parts.query, keep_blank_values=True):
        if len(value) >= 3:
            pieces.add(value)
    if parts.query:
        pieces.add(parts.query)
    return {p for p in pieces if len(p) >= 3}


def transport_reason(exc: BaseException) -> str:
    """A few words on why a connection failed: ``connection refused``, ``timed out``, ..."""
    for error in _chain(exc):
        name = type(error).__name__
        if isinstance(error, (socket.timeout, TimeoutError)) or "Timeout" in name:
            return "timed out"
        if isinstance(error, socket.gaierror):
            return "host name not resolved"
        if isinstance(error, ssl.SSLError):
            return f"TLS error ({getattr(error, 'reason', None) or 'handshake failed'})"
        if isinstance(error, OSError) and error.errno in _ERRNO:
            return _ERRNO[error.errno]
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
    return f"{type(exc).__name__}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: Any = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
