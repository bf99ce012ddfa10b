"""Ledger URLs: as they may be shown (passwords never leave the process in text), and as each
backend reads them (PostgreSQL's conninfo and schema, SQLite's file and options)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError

__all__ = ["MAX_TIMEOUT", "libpq_uri", "pg_conninfo", "redact_url", "sqlite_options"]

_SYNC = {"normal": "NORMAL", "full": "FULL", "extra": "EXTRA"}

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

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


def pg_conninfo(url: str) -> tuple[str, str]:
    """A PostgreSQL ledger URL as (libpq connection URI without ``schema``, schema name);
    ConfigurationError when it is malformed or the schema is not a lowercase SQL name."""
    parts = urlsplit(libpq_uri(url))
    if parts.scheme not in ("postgresql", "postgres") or not parts.netloc:
        raise ConfigurationError(
            f"PostgreSQL ledger URL {redact_url(url)!r} is malformed; "
            "use postgresql://user@host:5432/database[?schema=name]"
        )
    query = parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True)  # libpq: + is a +
    schema = "kling_cost"
    rest = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"schema {schema!r} in the ledger URL must be a lowercase SQL name (letters, digits, _)"
        )
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), ""))
    return conninfo, schema


MAX_TIMEOUT = 86_400.0
"""Longest lock wait a ``?timeout=`` may ask for (a day), in seconds."""


def sqlite_options(url: str) -> tuple[str, str, float, str]:
    """A SQLite ledger URL as (file path, ``synchronous`` pragma, lock timeout in seconds,
    checkpoint mode); ConfigurationError when it is malformed or names no usable file."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigurationError(
            f"SQLite ledger URL {url!r} is malformed; use sqlite:///relative.db or "
            "sqlite:////absolute/path.db"
        )
    raw = unquote(parts.path[1:])
    if not raw or raw == ":memory:":
        raise ConfigurationError(
            f"SQLite ledger URL {url!r} names no file; the ledger must be a file shared by "
            "every process (sqlite:///path/to/ledger.db)"
        )
    path = Path(raw).expanduser()
    if path.is_dir():
        raise ConfigurationError(f"SQLite ledger path {path} is a directory; name a file")
    if not path.parent.is_dir():
        raise ConfigurationError(
            f"SQLite ledger directory {path.parent} does not exist; create it or choose another path"
        )
    query = parse_qs(parts.query)
    sync = query.pop("synchronous", ["normal"])[-1].lower()
    if sync not in _SYNC:
        raise ConfigurationError(f"synchronous={sync!r} in {url!r}; allowed: normal, full, extra")
    try:
        timeout = float(query.pop("timeout", ["30"])[-1])
    except ValueError:
        raise ConfigurationError(f"timeout in {url!r} must be a number of seconds") from None
    if not 0 < timeout <= MAX_TIMEOUT:  # also NaN and infinity
        raise ConfigurationError(f"timeout in {url!r} must be between 0 and {MAX_TIMEOUT} seconds")
    checkpoint = query.pop("checkpoint", ["background"])[-1].lower()
    if checkpoint not in ("background", "auto"):
        raise ConfigurationError(f"checkpoint={checkpoint!r} in {url!r}; allowed: background, auto")
    if query:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(sorted(query))} in {url!r}; "
            "allowed: synchronous, timeout, checkpoint"
        )
    return str(path), _SYNC[sync], timeout, checkpoint
