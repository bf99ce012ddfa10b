"""Kling's envelope and error answers, as the proxy writes them.

Every answer has Kling's shape, ``{"code", "message", "request_id", "data"}``, so a client's
SDK raises its usual errors. How the proxy's own refusals are spelt (see the README):

=====================================  ======  =====
refusal                                HTTP    code
=====================================  ======  =====
no / bad / revoked / expired key       401     1000-1004 (as Kling)
a budget (or the key's per-request     429     1102 (Kling's "resource pack used up":
maximum) lacks room                            SDKs treat it as out of credit, not retryable)
the key's concurrency is reached       429     1303 (Kling's "parallel tasks over the limit")
a model the key may not use            403     1103
unpriceable body, bad callback_url     400     1201
a body over the size limit             413     1200
an unknown path                        404     1202
a task of another key                  404     1203 (as if it did not exist)
the ledger is unreachable              503     5000 (nothing is sent upstream)
=====================================  ======  =====
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from ..errors import InvalidRequest, KlingAPIError
from ..kling.errors import HTTP_STATUS
from ..money import json_exact

__all__ = ["HTTP_STATUS", "error", "error_from", "success"]


def _json(payload: object) -> bytes:
    return json_exact(payload, separators=(",", ":")).encode()


def success(data: Any, request_id: str | None = None) -> Response:
    request_id = request_id or uuid.uuid4().hex
    body = {"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data}
    return Response(_json(body), media_type="application/json", headers={"x-request-id": request_id})


def error(code: int, message: str, http_status: int | None = None) -> Response:
    request_id = uuid.uuid4().hex
    status = http_status or HTTP_STATUS.get(code, 400)
    body = {"code": code, "message": message, "request_id": request_id, "data": None}
    return Response(
        _json(body), status_code=status, media_type="application/json", headers={"x-request-id": request_id}
    )


def error_from(exc: KlingAPIError) -> Response:
    """Kling's (or our own Kling-coded) error, as Kling would answer it. The guard's own
    :class:`InvalidRequest` without a code (a request it cannot send, e.g. an external id
    already settled without a task) is 400/1201."""
    if exc.code is None and isinstance(exc, InvalidRequest):
        return error(1201, exc.message, 400)
    code = exc.code if exc.code is not None else 5000
    status = exc.http_status if exc.http_status and exc.http_status >= 400 else HTTP_STATUS.get(code, 500)
    return error(code, exc.message, status)
