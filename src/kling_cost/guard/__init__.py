"""Guarded generation: every Kling create estimated, reserved within budget, and settled.

``async_client.py`` and ``async_settle.py`` are the one source of both guards; ``client.py``
and ``settle.py`` are generated from them by ``python scripts/unasync.py``. ``_core.py`` holds
what involves no I/O; ``ledger_view.py`` the async guard's view of the ledger.
"""

from ._core import GuardedRequest, SettleReport
from .async_client import AsyncCostAwareClient
from .client import CostAwareClient
from .ledger_view import AsyncLedgerView

__all__ = ["AsyncCostAwareClient", "AsyncLedgerView", "CostAwareClient", "GuardedRequest", "SettleReport"]
