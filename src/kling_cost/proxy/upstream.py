"""Kling as the proxy reaches it: the guarded client for creates, a raw pass-through for queries.

The real credentials come only from the proxy's environment (``KLING_ACCESS_KEY`` and
``KLING_SECRET_KEY`` for legacy paths, ``KLING_API_KEY`` for the new standard) and are added
here; a client's own ``Authorization`` header is never forwarded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ConfigurationError, KlingAPIError, ServerError
from ..kling.async_client import AsyncKlingClient

__all__ = ["Upstream", "UpstreamAnswer"]


@dataclass(frozen=True)
class UpstreamAnswer:
    """What Kling answered: HTTP status, the parsed envelope (None if not JSON), the raw body."""

    status: int
    envelope: dict[str, Any] | None
    content: bytes

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.envelope is not None and self.envelope.get("code") == 0


class Upstream:
    """Raw requests to Kling with the proxy's own credentials."""

    def __init__(self, client: AsyncKlingClient, http: httpx.AsyncClient) -> None:
        self.client = client
        self.http = http

    def _authorization(self, api_key_only: bool) -> str:
        try:
            auth = self.client.require_api_key("this path") if api_key_only else self.client.auth
        except ConfigurationError as exc:
            raise ServerError(
                f"the proxy cannot call Kling here: {exc}", code=5000, http_status=500
            ) from None
        return auth.authorization()

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        api_key_only: bool = False,
    ) -> UpstreamAnswer:
        headers = {"Authorization": self._authorization(api_key_only)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self.http.request(
                method,
                self.client.base_url + path,
                params=dict(params or {}),
                content=body,
                headers=headers,
            )
        except httpx.TimeoutException:
            raise ServerError("Kling did not answer in time", code=5002, http_status=504) from None
        except httpx.HTTPError as exc:
            raise ServerError(
                f"Kling is unreachable: {type(exc).__name__}", code=5000, http_status=503
            ) from None
        content = response.content
        try:
            parsed = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        envelope = parsed if isinstance(parsed, dict) else None
        return UpstreamAnswer(response.status_code, envelope, content)

    @staticmethod
    def raise_for(answer: UpstreamAnswer) -> None:
        """Kling's error answer as :class:`KlingAPIError` (with its code and HTTP status)."""
        if answer.ok:
            return
        env = answer.envelope or {}
        code = env.get("code") if isinstance(env.get("code"), int) else None
        message = env.get("message") if isinstance(env.get("message"), str) else None
        raise KlingAPIError(
            message or f"Kling answered HTTP {answer.status}",
            code=code if code is not None else 5000,
            http_status=answer.status if answer.status >= 400 else 500,
        )
