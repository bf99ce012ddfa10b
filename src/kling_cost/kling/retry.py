"""When and how long to wait before trying a Kling call again."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ConcurrencyLimited, KlingAPIError, RateLimited, ServerError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base_delay * multiplier**n`` (capped at ``max_delay``) plus jitter.

    ``attempts`` counts the first try (``attempts=1`` never retries). Kling asks for backoff
    starting at >= 1 s on 1302/1303. Tests make it instant with ``RetryPolicy(base_delay=0)``
    or switch it off with ``RetryPolicy.off()``. Only safe calls are ever retried: queries,
    and creates that carry an ``external_task_id``.
    """

    attempts: int = 4
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.1
    """Up to this fraction of each delay is added at random (spreads out many clients)."""

    @classmethod
    def off(cls) -> RetryPolicy:
        return cls(attempts=1)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        raw = min(self.max_delay, self.base_delay * self.multiplier ** (retry_number - 1))
        if raw <= 0:
            return 0.0
        return raw * (1 + self.jitter * random.random())

    @staticmethod
    def retryable(exc: KlingAPIError) -> bool:
        """Errors worth another try: too fast, too many parallel tasks, server or transport trouble."""
        return isinstance(exc, (RateLimited, ConcurrencyLimited, ServerError))
