"""Checking Kling's callbacks: Standard Webhooks signatures (``webhook-id/-timestamp/-signature``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from ..errors import AuthError
from .models import KlingTask

__all__ = ["parse_callback", "sign_webhook", "verify_webhook", "webhook_key"]

TOLERANCE = 300
"""Callbacks whose timestamp is more than 5 minutes off are rejected (replay protection)."""


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a signing secret: ``whsec_<base64>`` is decoded, anything else used as UTF-8."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> None:
    """Raise :class:`~kling_cost.errors.AuthError` unless the callback is signed with ``secret``
    and its timestamp is within ``tolerance`` seconds of ``now``."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise AuthError("callback is missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise AuthError(f"callback webhook-timestamp {stamp!r} is not a number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise AuthError(f"callback timestamp {timestamp} is more than {tolerance} s off")
    expected = sign_webhook(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise AuthError("callback signature does not match")


def parse_callback(body: bytes) -> KlingTask:
    """The task a callback carries (Kling posts the task object, with ``final_unit_deduction``)."""
    return KlingTask.model_validate(json.loads(body))
