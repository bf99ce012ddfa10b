"""Checking Kling's callbacks: Standard Webhooks signatures (``webhook-id/-timestamp/-signature``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from ..errors import AuthError, ConfigurationError
from .models import KlingTask

__all__ = ["parse_callback", "sign_webhook", "verify_webhook", "webhook_key"]

TOLERANCE = 300
"""Callbacks whose timestamp is more than 5 minutes off are rejected (replay protection)."""


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a signing secret: ``whsec_<base64>`` is decoded, anything else used as UTF-8.

    Raises :class:`~kling_cost.errors.ConfigurationError` for a ``whsec_`` secret whose rest is
    not base64 (or is empty), or a secret that is not a non-empty string.
    """
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError("a webhook signing secret must be a non-empty string")
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ConfigurationError(
                "webhook secret starts with whsec_ but the rest is not base64; copy the whole secret"
            )
        return key
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
    """Return when the callback is signed with ``secret`` and its timestamp is within
    ``tolerance`` seconds of ``now``; otherwise raise :class:`~kling_cost.errors.AuthError`
    (missing headers, a bad or stale timestamp, a signature that does not match, including
    one that is not even ASCII). A bad ``secret`` (``whsec_`` whose rest is not base64) is
    the receiver's own mistake, not the sender's: :class:`~kling_cost.errors.ConfigurationError`.
    """
    key = webhook_key(secret)  # a bad secret fails first, whatever the request
    lower = {str(k).lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise AuthError("callback is missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isascii() or not stamp.strip().lstrip("-").isdigit() or len(stamp) > 20:
        raise AuthError(f"callback webhook-timestamp {stamp[:40]!r} is not a number")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise AuthError(f"callback timestamp {timestamp} is more than {tolerance} s off")
    signed = f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    expected = b"v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    given = [s.encode("utf-8", "surrogatepass") for s in signatures.split()]
    if not any(hmac.compare_digest(expected, candidate) for candidate in given):
        raise AuthError("callback signature does not match")


def parse_callback(body: bytes) -> KlingTask:
    """The task a callback carries (Kling posts the task object, with ``final_unit_deduction``)."""
    return KlingTask.model_validate(json.loads(body))
