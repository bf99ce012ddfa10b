"""The ledger classes of earlier versions, still working (each warns): ``SQLiteLedger(url)``
and ``PostgresLedger(url)`` were one class per backend; a :class:`Ledger` now *has* a backend.
Use :func:`~kling_cost.ledger.open_ledger` (or ``Ledger(SQLiteBackend(url))``) instead.

They are reached by their old import paths (``kling_cost.ledger.SQLiteLedger``,
``kling_cost.ledger.sqlite.SQLiteLedger``, ``kling_cost.ledger.postgres.PostgresLedger``)
through those modules' ``__getattr__``, and are in no ``__all__``.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

from .backend import Clock
from .ledger import DEFAULT_TTL, Ledger

__all__ = ["PostgresLedger", "SQLiteLedger"]


def _deprecated(old: str, url: str) -> None:
    warnings.warn(
        f"{old}(url) is deprecated: use kling_cost.open_ledger(url) (the URL picks the backend) "
        f"or Ledger({old.replace('Ledger', 'Backend')}(url))",
        DeprecationWarning,
        stacklevel=3,
    )


class SQLiteLedger(Ledger):
    """Deprecated: ``open_ledger("sqlite:///...")``. Same arguments as before."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        clock: Clock | None = None,
        default_ttl: timedelta = DEFAULT_TTL,
        sweep_interval: timedelta = timedelta(seconds=1),
    ) -> None:
        _deprecated("SQLiteLedger", url)
        from .sqlite import SQLiteBackend

        backend = SQLiteBackend(url, clock=clock, create=create)
        super().__init__(backend, default_ttl=default_ttl, sweep_interval=sweep_interval)


class PostgresLedger(Ledger):
    """Deprecated: ``open_ledger("postgresql://...")``. Same arguments as before (``pool``,
    ``min_size``, ``max_size``, ``connect_timeout``, ``clock``, ...)."""

    def __init__(
        self,
        url: str,
        *,
        default_ttl: timedelta = DEFAULT_TTL,
        sweep_interval: timedelta = timedelta(seconds=1),
        **options: Any,
    ) -> None:
        _deprecated("PostgresLedger", url)
        from .postgres import PostgresBackend

        backend = PostgresBackend(url, **options)
        super().__init__(backend, default_ttl=default_ttl, sweep_interval=sweep_interval)
