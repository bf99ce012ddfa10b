"""Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

One implementation for every signed request the package sends or receives: Kling's task
callbacks (checked with :func:`verify_webhook`, also importable from :mod:`kling_cost.kling`)
and the alert webhooks of :mod:`kling_cost.alerts` (signed with :func:`sign_webhook`; their
receivers check them with :func:`verify_webhook`). It depends on nothing but the errors.

The signature is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``; a ``whsec_<base64>``
secret is base64-decoded into the HMAC key, any other secret used as UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence

from .errors import AuthError, ConfigurationError, ValidationError

__all__ = ["TOLERANCE", "sign_webhook", "verify_webhook", "webhook_key"]

TOLERANCE = 300
"""Requests whose timestamp is more than 5 minutes off are refused (replay protection)."""

_STAMP = re.compile(r"\s*-?[0-9]{1,19}\s*")
"""A ``webhook-timestamp``: whole seconds in ASCII digits (a sign at most once), nothing else."""


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


def _body_bytes(body: bytes | str) -> bytes:
    """The signed bytes of a body: bytes as they are, text encoded as UTF-8 (as senders sign it)."""
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")  # never fails; a lone surrogate cannot match
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise ValidationError(
        f"a webhook body must be the raw request body as bytes (or str), not {type(body).__name__}; "
        "sign and verify exactly what was sent, not parsed JSON"
    )


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (a ``str`` body is signed as UTF-8)."""
    signed = f"{msg_id}.{timestamp}.".encode() + _body_bytes(body)
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _text(value: object) -> str:
    """A header name or value as text: ASGI servers give ``bytes`` (Latin-1, as HTTP is)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, str):
        return value
    raise ValidationError(f"webhook headers must be str or bytes, not {type(value).__name__}")


def _header_pairs(headers: object) -> Iterable[tuple[object, object]]:
    """The (name, value) pairs of a header mapping, or of ASGI's raw list of pairs."""
    if isinstance(headers, Mapping):
        return headers.items()
    if isinstance(headers, (list, tuple)) and all(
        isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2
        for pair in headers
    ):
        return [(name, value) for name, value in headers]
    raise ValidationError(
        f"webhook headers must be a mapping or a list of (name, value) pairs, not {type(headers).__name__}"
    )


def verify_webhook(
    secret: str,
    headers: Mapping[str, str] | Mapping[bytes, bytes] | Sequence[tuple[bytes, bytes]],
    body: bytes | str,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> None:
    """Return when the request is signed with ``secret`` and its timestamp is within
    ``tolerance`` seconds of ``now``; otherwise raise :class:`~kling_cost.errors.AuthError`
    (missing headers, a bad or stale timestamp, a signature that does not match, including
    one that is not even ASCII). A bad ``secret`` (``whsec_`` whose rest is not base64) is
    the receiver's own mistake, not the sender's: :class:`~kling_cost.errors.ConfigurationError`.

    ``body`` is the raw request body: ``bytes``, or the same text as ``str`` (checked as its
    UTF-8 bytes); anything else (a parsed ``dict``) is a
    :class:`~kling_cost.errors.ValidationError`, as the signature covers the exact bytes sent.
    ``headers`` may have ``str`` or ``bytes`` names and values, in any case: a mapping, or
    ASGI's raw list of ``(name, value)`` pairs (``scope["headers"]``).
    """
    key = webhook_key(secret)  # a bad secret fails first, whatever the request
    raw = _body_bytes(body)
    lower = {_text(k).lower(): _text(v) for k, v in _header_pairs(headers)}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise AuthError("request is missing webhook-id, webhook-timestamp or webhook-signature")
    if _STAMP.fullmatch(stamp) is None:
        raise AuthError(f"webhook-timestamp {stamp[:40]!r} is not a number")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise AuthError(f"webhook timestamp {timestamp} is more than {tolerance} s off")
    signed = f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + raw
    expected = b"v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    given = [s.encode("utf-8", "surrogatepass") for s in signatures.split()]
    if not any(hmac.compare_digest(expected, candidate) for candidate in given):
        raise AuthError("webhook signature does not match")
