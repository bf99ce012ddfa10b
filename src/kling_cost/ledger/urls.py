"""Ledger URLs as they may be shown: passwords never leave the process in text."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["libpq_uri", "redact_url"]

_SECRET_PARAMS = frozenset({"password", "sslpassword"})
MASK = "***"


def libpq_uri(url: str) -> str:
    """``url`` as Python's URL parser must see it to read what libpq reads: libpq takes ``#``
    literally anywhere, and ``?`` in the user part (up to its first ``@`` before a ``/``),
    where Python would cut the URL; both are percent-encoded here (libpq decodes them)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.replace("#", "%23")
    head = rest.split("/", 1)[0]
    at = head.find("@")
    user = rest[:at].replace("?", "%3F") if at >= 0 else ""
    tail = rest[at:] if at >= 0 else rest
    return f"{scheme}://{user}{tail}".replace("#", "%23")


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by
    ``***``: ``postgresql://user:***@host/db``. A URL without a secret comes back unchanged."""
    try:
        parts = urlsplit(libpq_uri(url))
    except ValueError:
        return "<unparsable ledger URL>"
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
        masked = [(key, MASK if key.lower() in _SECRET_PARAMS else value) for key, value in pairs]
        query = urlencode(masked, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
