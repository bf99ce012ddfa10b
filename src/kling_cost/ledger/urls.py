"""Ledger URLs as they may be shown: passwords never leave the process in text."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact_url"]

_SECRET_PARAMS = frozenset({"password", "sslpassword"})
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by
    ``***``: ``postgresql://user:***@host/db``. A URL without a secret comes back unchanged."""
    try:
        parts = urlsplit(url)
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
