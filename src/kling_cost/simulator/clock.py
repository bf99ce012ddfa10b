"""Clocks for the simulator: the system clock, or a manual one that tests move."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from ..errors import ValidationError

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to: ``clock.advance(10)``. Starts at ``start`` (default: now)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValidationError(f"a clock does not go back: advance({seconds!r})")
        with self._lock:
            self._now += seconds
