"""Callbacks: POST the task to its ``callback_url`` on each status change, Standard-Webhooks signed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import httpx

from .tasks import CallbackEvent

__all__ = ["CallbackSender", "Delivery", "signature"]


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``; a ``whsec_`` secret is base64."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt, kept for tests and the admin view."""

    url: str
    task_id: str
    task_status: str
    status_code: int | None
    error: str | None


class CallbackSender:
    """Delivers callbacks with a retry or two; at-least-once, in the order they were queued."""

    def __init__(self, secret: str | None, *, attempts: int = 3, timeout: float = 5.0) -> None:
        self.secret = secret
        self.attempts = attempts
        self.timeout = timeout
        self.deliveries: list[Delivery] = []

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.secret:
            msg_id = f"msg_{uuid.uuid4().hex}"
            stamp = int(time.time())
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = signature(self.secret, msg_id, stamp, body)
        return headers

    async def deliver(self, client: httpx.AsyncClient, event: CallbackEvent) -> None:
        body = json.dumps(event.payload, separators=(",", ":")).encode()
        headers = self.headers(body)
        for _ in range(self.attempts):
            try:
                response = await client.post(event.url, content=body, headers=headers, timeout=self.timeout)
            except httpx.HTTPError as exc:
                self._record(event, None, f"{type(exc).__name__}: {exc}")
                continue
            self._record(event, response.status_code, None)
            if response.status_code < 500:
                return

    def _record(self, event: CallbackEvent, status_code: int | None, error: str | None) -> None:
        self.deliveries.append(
            Delivery(
                url=event.url,
                task_id=str(event.payload.get("task_id", event.payload.get("id"))),
                task_status=str(event.payload.get("task_status", event.payload.get("status"))),
                status_code=status_code,
                error=error,
            )
        )
