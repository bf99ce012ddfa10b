"""Kling's error codes -> the typed :class:`~kling_cost.errors.KlingAPIError` family."""

from __future__ import annotations

from ..errors import (
    AccountError,
    AuthError,
    ConcurrencyLimited,
    ContentRejected,
    InsufficientBalance,
    InvalidRequest,
    KlingAPIError,
    PermissionDenied,
    RateLimited,
    ServerError,
)

__all__ = ["HTTP_STATUS", "error_class", "error_for"]

_BY_CODE: dict[int, type[KlingAPIError]] = {
    **dict.fromkeys(range(1000, 1005), AuthError),
    1100: AccountError,
    1101: AccountError,
    1102: InsufficientBalance,
    1103: PermissionDenied,
    **dict.fromkeys(range(1200, 1204), InvalidRequest),
    1300: ContentRejected,
    1301: ContentRejected,
    1302: RateLimited,
    1303: ConcurrencyLimited,
    1304: AccountError,
    **dict.fromkeys(range(5000, 5003), ServerError),
}

HTTP_STATUS: dict[int, int] = {
    **dict.fromkeys(range(1000, 1005), 401),
    **dict.fromkeys((1100, 1101, 1102, 1302, 1303, 1304), 429),
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    5000: 500,
    5001: 503,
    5002: 504,
}
"""The HTTP status Kling sends with each code (some codes also arrive with HTTP 200)."""


def error_class(code: int | None, http_status: int | None = None) -> type[KlingAPIError]:
    """The error class for a Kling code; unknown codes fall back on the HTTP status."""
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if http_status is not None:
        if http_status >= 500:
            return ServerError
        if http_status == 401:
            return AuthError
        if http_status == 403:
            return PermissionDenied
        if http_status == 429:
            return RateLimited
        if http_status in (400, 404, 405, 422):
            return InvalidRequest
    return KlingAPIError


def error_for(
    code: int | None, message: str, *, request_id: str | None = None, http_status: int | None = None
) -> KlingAPIError:
    """Build the typed error for one error answer."""
    cls = error_class(code, http_status)
    text = f"Kling error {code}: {message}" if code is not None else message
    if request_id:
        text += f" (request_id {request_id})"
    err = cls(text, code=code, request_id=request_id, http_status=http_status)
    err.message = message
    return err
