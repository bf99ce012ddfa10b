"""An error answer of the simulator: a Kling code, its HTTP status and message."""

from __future__ import annotations

from ..kling.errors import HTTP_STATUS as KLING_HTTP_STATUS

__all__ = ["HTTP_STATUS", "SimError"]

HTTP_STATUS = KLING_HTTP_STATUS
"""The HTTP status of each Kling code (one table: :data:`kling_cost.kling.errors.HTTP_STATUS`)."""


class SimError(Exception):
    """Raised inside the simulator; the app turns it into Kling's error envelope."""

    def __init__(self, code: int, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else HTTP_STATUS.get(code, 400)
