"""An error answer of the simulator: a Kling code, its HTTP status and message."""

from __future__ import annotations

__all__ = ["HTTP_STATUS", "SimError"]

HTTP_STATUS: dict[int, int] = {
    1000: 401,
    1001: 401,
    1002: 401,
    1003: 401,
    1004: 401,
    1100: 429,
    1101: 429,
    1102: 429,
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    1302: 429,
    1303: 429,
    1304: 429,
    5000: 500,
    5001: 503,
    5002: 504,
}


class SimError(Exception):
    """Raised inside the simulator; the app turns it into Kling's error envelope."""

    def __init__(self, code: int, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else HTTP_STATUS.get(code, 400)
