"""The read-only web dashboard and its JSON API (``kling-cost serve``)."""

from __future__ import annotations

from .access import is_loopback
from .dashboard import create_dashboard_app

__all__ = ["create_dashboard_app", "is_loopback"]
