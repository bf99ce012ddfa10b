"""Guarded generation: every Kling create estimated, reserved within budget, and settled."""

from ._core import GuardedRequest, SettleReport
from .async_client import AsyncCostAwareClient
from .client import CostAwareClient

__all__ = ["AsyncCostAwareClient", "CostAwareClient", "GuardedRequest", "SettleReport"]
