"""The durable credit ledger, chosen by URL: ``sqlite:///...`` (default) or ``postgresql://...``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ._urls import redact_url
from .base import Clock, Ledger
from .cache_store import CacheEntry
from .copy import CopyResult, copy_ledger
from .models import AlertRecord, Charge, Reservation
from .sqlite import SQLiteLedger

__all__ = [
    "AlertRecord",
    "CacheEntry",
    "Charge",
    "Clock",
    "CopyResult",
    "Ledger",
    "Reservation",
    "SQLiteLedger",
    "copy_ledger",
    "default_ledger_url",
    "open_ledger",
]

ENV_LEDGER = "KLING_COST_LEDGER"


def default_ledger_url() -> str:
    """``$KLING_COST_LEDGER``, else ``ledger.db`` in the user data directory (created)."""
    env = os.environ.get(ENV_LEDGER)
    if env:
        return env
    import platformdirs

    folder = Path(platformdirs.user_data_dir("kling-cost", appauthor=False))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the default ledger directory {folder}: {exc}; set KLING_COST_LEDGER"
        ) from None
    return f"sqlite:///{folder / 'ledger.db'}"


def open_ledger(url: str | None = None, *, create: bool = True, **options: Any) -> Ledger:
    """Open (and migrate) the ledger at ``url``; the URL scheme picks the backend.

    ``create=False`` opens only a ledger that exists: a missing SQLite file raises
    :class:`StorageError` instead of becoming a new, empty ledger (read-only tools use it, so
    a mistyped path is an error, not "nothing spent"). A PostgreSQL database is never created
    by this package, only its tables.

    ``options`` go to the backend: ``clock`` (a function returning an aware UTC datetime),
    ``default_ttl``, ``sweep_interval``, and backend-specific ones.
    """
    target = url or default_ledger_url()
    if not isinstance(target, str):
        raise ConfigurationError(f"ledger URL must be a string, not {type(target).__name__}")
    try:
        scheme = urlsplit(target).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket; the URL may hold a password
        raise ConfigurationError(
            f"ledger URL is malformed ({exc}); check it, e.g. [::1] for IPv6 hosts"
        ) from None
    if scheme in ("postgresql", "postgres"):
        from . import postgres  # noqa: F401 - registers the backend; fails clearly without the extra
    backend = Ledger.registry.get(scheme)
    if backend is None:
        known = ", ".join(sorted({*Ledger.registry, "postgresql", "postgres"}))
        raise ConfigurationError(
            f"ledger URL {redact_url(target)!r} has an unknown scheme {scheme!r}; use one of: {known} "
            "(e.g. sqlite:///credits.db)"
        )
    if not create and issubclass(backend, SQLiteLedger):
        options["create"] = False
    ledger = backend(target, **options)
    if not isinstance(ledger, Ledger):
        raise ConfigurationError(f"backend {backend.__name__} is not a Ledger")
    return ledger
