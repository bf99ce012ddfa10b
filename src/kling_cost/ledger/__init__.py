"""The durable credit ledger, chosen by URL: ``sqlite:///...`` (default) or ``postgresql://...``.

How it is put together (one job per file; everything goes through one transaction seam):

* :class:`Ledger` (``ledger.py``) is what callers use: budgets and the money operations
  (reserve, commit, release, charge, extend, attach_task, sweep, usage). It checks each call,
  converts amounts to integer thousandths at its edge, and runs it as one transaction of
  :meth:`Ledger.transaction` (the seam: a cursor, committed or rolled back). The bodies of
  those transactions are its parts: ``holds.py`` (reserving: the conditional update that
  keeps ``used + reserved <= limit``), ``settle.py`` (commit, release, sweep, leases, charge
  rows), ``limits.py`` (setting and deleting budgets), ``idempotency.py`` (one key, one
  request). They work on the rows of ``records.py``, in thousandths, never ``Decimal``.
* It *has* a backend (``backend.py``, the contract; ``sqlite.py``, ``postgres.py``): connections,
  transactions, the few SQL fragments that differ, driver errors translated. Nothing else.
  PostgreSQL's transaction cursor, which sends queued statements in one pipeline, and its
  translation of driver errors are ``pg_cursor.py``; SQLite's are ``sqlite_cursor.py``.
  SQLite's writers of every process take turns in one line (``sqlite_queue.py``: a ``flock``
  the kernel hands on the moment it is released, left as SQLite's lock is taken so the next
  writer wakes during the transaction; SQLite's own lock has no line), and its WAL
  is copied back by a background thread (``sqlite_checkpoint.py``). A forked child is refused a
  SQLite file its parent had open (``sqlite_fork.py``: SQLite's locks do not survive a fork).
  On PostgreSQL the common reserve, commit, release, extend and cache hit are one statement
  each (``pg_fast.py``: server-side functions that ``schema_fast.py`` installs; anything
  unusual is declined and runs the general path above); those calls keep one pooled
  connection and its cursor between them (``pg_spare.py``: the pool's bookkeeping cost more
  than the call's own Python). On SQLite the common reserve and commit run in one plain
  write transaction each, with the general path's statements and less Python
  (``sqlite_fast.py``: anything unusual rolls back and runs the general path).
* It *has* seven stores, each its own object on the same seam: ``ledger.cache``
  (``cache_store.py``: the dedup cache), ``ledger.outbox`` (``outbox_store.py``: alerts; its
  writer hook, ``outbox.py``, records threshold crossings), ``ledger.rollup``
  (``rollup_store.py``: report sums; its writer hook ``rollup.py``, its read planner
  ``rollup_read.py``, ``rollup_fold.py``, which folds PostgreSQL's noted charges in, and
  ``rollup_mark.py``, which folds SQLite's charges above a watermark),
  ``ledger.queries`` (``queries.py``: read-only questions),
  ``ledger.proxy`` (``proxy_store.py``: the proxy's virtual keys and task owners),
  ``ledger.relays`` (``relay_store.py``: the callbacks the proxy relays to clients) and
  ``ledger.runs`` (``runs_store.py``: the bill's reconciliation runs and differences). The
  ledger's ``cache_*()``, ``charges()``, ``alerts()``, ``usage()``, ... delegate to them.
* The bill's state (``bill_store.py``: named JSON values in ``bill_meta``, the resource-pack
  snapshot, budgets kept from packs, the shared ``/account/costs`` rate limit) is a store
  made on demand, ``BillStore(ledger)``, on the same seam.
* Hooks (``hooks.py``) run inside the ledger's transactions: the two writers above and any
  you append to ``ledger.hooks``; they see the rows in thousandths.
* Also: ``models.py`` (what the ledger hands out), ``schema.py`` and ``schema_steps.py``
  (numbered migrations; ``schema_proxy.py``: the proxy's tables; ``schema_bill.py``: the
  bill's), ``copy.py`` (move a ledger to another backend, a page at a time), ``urls.py``
  (URLs shown without their password), ``deprecated.py`` (``SQLiteLedger`` and
  ``PostgresLedger`` of earlier versions, still working, with a warning).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .backend import Backend, Clock
from .cache_store import CacheEntry
from .copy import CopyResult, copy_ledger
from .ledger import Ledger
from .models import AlertRecord, Charge, Reservation
from .rollup_fold import check_fold_interval
from .sqlite import SQLiteBackend
from .urls import redact_url

__all__ = [
    "AlertRecord",
    "Backend",
    "CacheEntry",
    "Charge",
    "Clock",
    "CopyResult",
    "Ledger",
    "Reservation",
    "SQLiteBackend",
    "copy_ledger",
    "default_ledger_url",
    "open_ledger",
    "redact_url",
]

ENV_LEDGER = "KLING_COST_LEDGER"


def __getattr__(name: str) -> Any:
    """``SQLiteLedger`` of earlier versions (deprecated, see :mod:`.deprecated`)."""
    if name == "SQLiteLedger":
        from .deprecated import SQLiteLedger

        return SQLiteLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_LEDGER_OPTIONS = ("default_ttl", "sweep_interval", "fold_interval")
"""Options of :func:`open_ledger` that belong to the :class:`Ledger`; the others go to the backend."""


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

    ``options``: ``clock`` (a function returning an aware UTC datetime), ``default_ttl``,
    ``sweep_interval``, ``fold_interval`` (seconds between background folds of the report
    rollup on PostgreSQL; None: only reads fold, see :mod:`.rollup_fold`), and backend-specific
    ones (PostgreSQL: ``pool``, ``min_size``, ``max_size``, ``connect_timeout``).
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
    backend_class = Backend.registry.get(scheme)
    if backend_class is None:
        known = ", ".join(sorted({*Backend.registry, "postgresql", "postgres"}))
        raise ConfigurationError(
            f"ledger URL {redact_url(target)!r} has an unknown scheme {scheme!r}; use one of: {known} "
            "(e.g. sqlite:///credits.db)"
        )
    ledger_options = {name: options.pop(name) for name in _LEDGER_OPTIONS if name in options}
    check_fold_interval(ledger_options.get("fold_interval"))  # before a backend opens
    backend = backend_class(target, create=create, **options)
    return Ledger(backend, **ledger_options)
