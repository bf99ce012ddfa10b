"""What the sync and async clients share: settings, prepared calls, answer parsing.

Private to ``kling/``: what other packages need (endpoints, body rules) is in :mod:`.endpoints`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import ValidationError as PydanticValidationError

from ..errors import ConfigurationError, InvalidRequest, KlingAPIError, ServerError
from ..pricing import Catalog, load_catalog
from .auth import Auth, resolve_auth
from .endpoints import (
    ACCOUNT_COSTS_PATH,
    BASE_URLS,
    CREATE_PATHS,
    ENV_BASE_URL,
    endpoint_kind,
    normalise_body,
    validate_create,
)
from .errors import error_for
from .models import AccountCosts, KlingRequest, KlingResponse, KlingTask
from .retry import RetryPolicy

__all__ = [
    "ClientCore",
    "PreparedCall",
    "is_duplicate_external_id",
    "parse_response",
    "parse_result",
    "to_millis",
    "transport_error",
]


def to_millis(value: int | datetime) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(f"datetime {value.isoformat()} needs a time zone")
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass(frozen=True)
class PreparedCall:
    """One HTTP call to make, and what its answer is."""

    method: Literal["GET", "POST"]
    path: str
    returns: Literal["task", "tasks", "costs"]
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    endpoint: str | None = None
    retry_safe: bool = True
    external_task_id: str | None = None


def is_duplicate_external_id(exc: KlingAPIError) -> bool:
    text = exc.message.lower()
    return isinstance(exc, InvalidRequest) and "external_task_id" in text and "exist" in text


def parse_response(response: httpx.Response) -> KlingResponse:
    """The envelope of a Kling answer, or the typed error it carries (HTTP 200 included)."""
    status = response.status_code
    request_id = response.headers.get("x-request-id")
    try:
        payload = json.loads(response.content, parse_float=Decimal)
    except ValueError as exc:
        raise ServerError(
            f"Kling answered HTTP {status} with a body that is not JSON ({len(response.content)} bytes)",
            request_id=request_id,
            http_status=status,
        ) from exc
    if not isinstance(payload, dict) or "code" not in payload:
        raise ServerError(
            f"Kling answered HTTP {status} without a code in the body",
            request_id=request_id,
            http_status=status,
        )
    try:
        envelope = KlingResponse.model_validate(payload)
    except PydanticValidationError as exc:
        raise ServerError(f"Kling answered HTTP {status} with a malformed envelope: {exc}") from exc
    if envelope.code != 0 or status >= 400:
        raise error_for(
            envelope.code if envelope.code != 0 else None,
            envelope.message or f"HTTP {status}",
            request_id=envelope.request_id or request_id,
            http_status=status,
        )
    return envelope


def parse_result(call: PreparedCall, envelope: KlingResponse) -> Any:
    """The ``data`` of a successful answer as the model the call returns."""
    try:
        if call.returns == "task":
            task = KlingTask.model_validate(envelope.data)
            task.endpoint = call.endpoint
            return task
        if call.returns == "tasks":
            items = envelope.data if isinstance(envelope.data, list) else []
            tasks = [KlingTask.model_validate(item) for item in items]
            for task in tasks:
                task.endpoint = call.endpoint
            return tasks
        return AccountCosts.model_validate(envelope.data)
    except PydanticValidationError as exc:
        raise ServerError(
            f"Kling's answer to {call.method} {call.path} does not have the documented shape: {exc}",
            request_id=envelope.request_id,
        ) from exc


class ClientCore:
    """Settings and call preparation shared by :class:`KlingClient` and :class:`AsyncKlingClient`."""

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        region: Literal["global", "china"] = "global",
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        validate: bool = True,
        catalog: Catalog | str | None = "kling-api",
        token_ttl: int = 1800,
        token_refresh_margin: int = 60,
        auth: Auth | None = None,
    ) -> None:
        if region not in BASE_URLS:
            raise ConfigurationError(f"region {region!r} is not a Kling region; allowed: global, china")
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL) or BASE_URLS[region]).rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.validate = validate
        self.catalog: Catalog | None = (
            catalog if isinstance(catalog, Catalog) or catalog is None else load_catalog(catalog)
        )
        self.auth: Auth = auth or resolve_auth(
            access_key,
            secret_key,
            api_key,
            token_ttl=token_ttl,
            token_refresh_margin=token_refresh_margin,
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.auth.authorization(), "Content-Type": "application/json"}

    def _url(self, path: str) -> str:
        return self.base_url + path

    # ------------------------------------------------------------------ preparation

    def prepare_create(self, endpoint: str, body: Mapping[str, Any] | KlingRequest) -> PreparedCall:
        kind = endpoint_kind(endpoint)
        data = normalise_body(body.to_body() if isinstance(body, KlingRequest) else dict(body))
        if self.validate:
            validate_create(kind, data, self.catalog)
        external = data.get("external_task_id") or None
        return PreparedCall(
            method="POST",
            path=CREATE_PATHS[kind],
            returns="task",
            body=data,
            endpoint=kind,
            retry_safe=external is not None,
            external_task_id=None if external is None else str(external),
        )

    def prepare_get(self, endpoint: str, task_id: str | None, external_task_id: str | None) -> PreparedCall:
        kind = endpoint_kind(endpoint)
        if (task_id is None) == (external_task_id is None):
            raise ConfigurationError("give exactly one of task_id and external_task_id")
        ident = task_id if task_id is not None else external_task_id
        if not ident or "/" in ident:
            raise ConfigurationError(f"task id {ident!r} is empty or contains '/'")
        return PreparedCall(method="GET", path=f"{CREATE_PATHS[kind]}/{ident}", returns="task", endpoint=kind)

    def prepare_list(self, endpoint: str, page: int, page_size: int) -> PreparedCall:
        kind = endpoint_kind(endpoint)
        if not 1 <= page <= 1000 or not 1 <= page_size <= 500:
            raise ConfigurationError(f"page {page} must be 1..1000 and page_size {page_size} 1..500")
        return PreparedCall(
            method="GET",
            path=CREATE_PATHS[kind],
            returns="tasks",
            params={"pageNum": page, "pageSize": page_size},
            endpoint=kind,
        )

    def prepare_costs(
        self, start_time: int | datetime, end_time: int | datetime, resource_pack_name: str | None
    ) -> PreparedCall:
        params: dict[str, Any] = {"start_time": to_millis(start_time), "end_time": to_millis(end_time)}
        if resource_pack_name:
            params["resource_pack_name"] = resource_pack_name
        return PreparedCall(method="GET", path=ACCOUNT_COSTS_PATH, returns="costs", params=params)

    def should_retry(self, call: PreparedCall, exc: KlingAPIError, attempt: int) -> bool:
        return call.retry_safe and attempt < self.retry.attempts and RetryPolicy.retryable(exc)

    @staticmethod
    def wait_target(task: KlingTask | str, endpoint: str | None) -> tuple[str, str]:
        if isinstance(task, KlingTask):
            kind = endpoint or task.endpoint
            task_id = task.task_id
        else:
            kind, task_id = endpoint, task
        if kind is None:
            raise ConfigurationError("wait() needs the endpoint of a task given by id")
        return endpoint_kind(kind), task_id


def transport_error(exc: httpx.HTTPError, call: PreparedCall) -> ServerError:
    return ServerError(f"could not reach Kling for {call.method} {call.path}: {type(exc).__name__}: {exc}")
