"""What the sync and async clients share: settings, prepared calls, answer parsing.

Private to ``kling/``: what other packages need (endpoints, body rules) is in :mod:`.endpoints`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import ValidationError as PydanticValidationError

from ..errors import (
    ConfigurationError,
    InvalidRequest,
    KlingAPIError,
    MissingCredentials,
    PricingError,
    ServerError,
)
from ..pricing import Catalog, load_catalog
from .auth import ApiKeyAuth, Auth, resolve_auth
from .endpoints import (
    ACCOUNT_COSTS_PATH,
    BASE_URLS,
    ENV_BASE_URL,
    IDENTIFY_FACE_PATH,
    TASKS_PATH,
    endpoint_kind,
    external_task_id_of,
    legacy_path,
    new_path,
    normalise_body,
    validate_create,
)
from .errors import error_for
from .models import AccountCosts, FaceIdentification, KlingRequest, KlingResponse, KlingTask
from .new_standard import (
    BalanceDeduction,
    CursorPage,
    NewStandardRequest,
    NewStandardTask,
    PackageDeduction,
)
from .retry import RetryPolicy

__all__ = [
    "IDS_PER_CALL",
    "MAX_PAGE",
    "AnyTask",
    "ClientCore",
    "PreparedCall",
    "Returns",
    "create_body",
    "is_duplicate_external_id",
    "is_new_task_ref",
    "page_body",
    "parse_response",
    "parse_result",
    "pick_task",
    "to_millis",
    "transport_error",
]


AnyTask = KlingTask | NewStandardTask
"""A task of either API standard (they answer the same questions: ``task_id``, ``done``, ...)."""

IDS_PER_CALL = 50
"""Ids per ``GET /tasks`` call: a longer list is split into several calls (Kling publishes no
limit; 50 ids keep the URL far below any server's limit)."""

Returns = Literal[
    "task", "tasks", "costs", "new_task", "new_tasks", "task_page", "package_page", "balance_page", "faces"
]


def is_new_task_ref(endpoint: str | None) -> bool:
    """Whether ``endpoint`` names a new-standard task: a create path with the model in it
    (``/text-to-video/kling-3.0``) or ``/tasks``."""
    if endpoint is None:
        return False
    return (
        endpoint.strip().rstrip("/") in (TASKS_PATH, TASKS_PATH.strip("/")) or new_path(endpoint) is not None
    )


MAX_PAGE = 500
"""Largest ``limit`` of a cursor listing (``POST /tasks``, ``/account/billing/...``)."""


def page_body(
    start_time: int | datetime | None,
    end_time: int | datetime | None,
    limit: int,
    cursor: str | None,
    filters: Mapping[str, str | Sequence[str] | None],
) -> dict[str, Any]:
    """The body of a cursor listing's first page (a ``cursor`` alone resumes one)."""
    if cursor:
        return {"cursor": cursor}
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"limit {limit!r} must be a whole number from 1 to {MAX_PAGE}")
    body: dict[str, Any] = {"limit": limit}
    if start_time is not None:
        body["start_time"] = to_millis(start_time)
    if end_time is not None:
        body["end_time"] = to_millis(end_time)
    items = [
        {"key": key, "values": [values] if isinstance(values, str) else list(values)}
        for key, values in filters.items()
        if values is not None
    ]
    if items:
        body["filters"] = items
    return body


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
    returns: Returns
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    endpoint: str | None = None
    retry_safe: bool = True
    external_task_id: str | None = None
    api_key_only: bool = False
    """The new standard's paths take the bearer API key only (never the AK/SK JWT)."""


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


_PAGES: dict[str, type[CursorPage[Any]]] = {
    "task_page": CursorPage[NewStandardTask],
    "package_page": CursorPage[PackageDeduction],
    "balance_page": CursorPage[BalanceDeduction],
}


def _items(data: object, call: PreparedCall) -> list[Any]:
    if isinstance(data, list):
        return data
    if data is None and call.returns == "tasks":
        return []
    raise ServerError(f"Kling's answer to {call.method} {call.path} has no list of tasks in data")


def parse_result(call: PreparedCall, envelope: KlingResponse) -> Any:
    """The ``data`` of a successful answer as the model the call returns."""
    try:
        if call.returns in ("task", "new_task"):
            model = KlingTask if call.returns == "task" else NewStandardTask
            task = model.model_validate(envelope.data)
            task.endpoint = call.endpoint
            return task
        if call.returns in ("tasks", "new_tasks"):
            model = KlingTask if call.returns == "tasks" else NewStandardTask
            tasks = [model.model_validate(item) for item in _items(envelope.data, call)]
            for task in tasks:
                task.endpoint = call.endpoint
            return tasks
        if call.returns in _PAGES:
            return _PAGES[call.returns].model_validate(envelope.data)
        if call.returns == "faces":
            return FaceIdentification.model_validate(envelope.data)
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
        self.base_url = _checked_base_url(base_url or os.environ.get(ENV_BASE_URL) or BASE_URLS[region])
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
        self.api_key_auth: Auth | None = _bearer_key(self.auth, api_key)
        """What the new standard's paths are called with: an API key (never the JWT)."""

    def require_api_key(self, what: str) -> Auth:
        """The API key the new standard's paths are called with (``what`` names the call in
        the error); :class:`MissingCredentials` when only an access/secret key is configured."""
        if self.api_key_auth is None:
            raise MissingCredentials(
                f"{what} is on Kling's new standard, which takes an API key only "
                "(Authorization: Bearer <API_KEY>; the access/secret key JWT is legacy-only): pass "
                "api_key= or set KLING_API_KEY",
                missing=("KLING_API_KEY",),
            )
        return self.api_key_auth

    def _headers(self, call: PreparedCall) -> dict[str, str]:
        auth = self.require_api_key(f"{call.method} {call.path}") if call.api_key_only else self.auth
        return {"Authorization": auth.authorization(), "Content-Type": "application/json"}

    def _url(self, path: str) -> str:
        return self.base_url + path

    # ------------------------------------------------------------------ preparation

    def prepare_create(
        self, endpoint: str, body: Mapping[str, Any] | KlingRequest | NewStandardRequest
    ) -> PreparedCall:
        """A create on either standard: a new-standard path (``/text-to-video/kling-3.0``)
        takes a ``prompt``/``contents`` + ``settings`` + ``options`` body and the API key."""
        path, data = create_body(endpoint, body)
        if path is None:
            kind = endpoint_kind(endpoint)
            target = legacy_path(kind)
            returns: Returns = "task"
        else:
            kind = target = path
            returns = "new_task"
        if self.validate:
            validate_create(kind, data, self.catalog)
        external = external_task_id_of(kind, data)
        return PreparedCall(
            method="POST",
            path=target,
            returns=returns,
            body=data,
            endpoint=kind,
            retry_safe=external is not None,
            external_task_id=external,
            api_key_only=path is not None,
        )

    def prepare_get(self, endpoint: str, task_id: str | None, external_task_id: str | None) -> PreparedCall:
        if (task_id is None) == (external_task_id is None):
            raise ConfigurationError("give exactly one of task_id and external_task_id")
        ident = task_id if task_id is not None else external_task_id
        if not ident or "/" in ident or "," in ident:
            raise ConfigurationError(f"task id {ident!r} is empty or contains '/' or ','")
        if is_new_task_ref(endpoint):
            name = "task_ids" if task_id is not None else "external_task_ids"
            return self._tasks_call({name: ident}, endpoint)
        kind = endpoint_kind(endpoint)
        return PreparedCall(method="GET", path=f"{legacy_path(kind)}/{ident}", returns="task", endpoint=kind)

    def prepare_tasks(
        self, task_ids: Sequence[str] | None, external_task_ids: Sequence[str] | None, per_call: int
    ) -> list[PreparedCall]:
        """``GET /tasks`` by ids or by external ids (exactly one), ``per_call`` ids a call."""
        if (task_ids is None) == (external_task_ids is None):
            raise ConfigurationError("give exactly one of task_ids and external_task_ids")
        if per_call < 1:
            raise ConfigurationError(f"per_call {per_call} must be at least 1")
        name = "task_ids" if task_ids is not None else "external_task_ids"
        ids = list(task_ids if task_ids is not None else external_task_ids or ())
        if isinstance(task_ids, str) or isinstance(external_task_ids, str):
            raise ConfigurationError(f"{name} must be a list of ids, not one string")
        for ident in ids:
            if not isinstance(ident, str) or not ident or "," in ident:
                raise ConfigurationError(f"task id {ident!r} is empty or contains ','")
        unique = list(dict.fromkeys(ids))
        return [
            self._tasks_call({name: ",".join(unique[i : i + per_call])}, TASKS_PATH)
            for i in range(0, len(unique), per_call)
        ]

    @staticmethod
    def _tasks_call(params: dict[str, str], endpoint: str) -> PreparedCall:
        where = new_path(endpoint) or TASKS_PATH
        return PreparedCall(
            method="GET",
            path=TASKS_PATH,
            returns="new_tasks",
            params=params,
            endpoint=where,
            api_key_only=True,
        )

    def prepare_page(self, path: str, returns: Returns, body: dict[str, Any]) -> PreparedCall:
        """One page of a cursor listing (``POST /tasks``, ``/account/billing/...``)."""
        return PreparedCall(method="POST", path=path, returns=returns, body=body, api_key_only=True)

    def prepare_identify_face(self, body: dict[str, Any]) -> PreparedCall:
        has_video = any(isinstance(body.get(k), str) and body[k].strip() for k in ("video_id", "video_url"))
        if self.validate and not has_video:
            raise PricingError(
                "video_id or video_url is required for identify-face",
                field="video_id or video_url",
                value=None,
            )
        # synchronous and free: safe to retry
        return PreparedCall(method="POST", path=IDENTIFY_FACE_PATH, returns="faces", body=body)

    def prepare_list(self, endpoint: str, page: int, page_size: int) -> PreparedCall:
        if is_new_task_ref(endpoint):
            raise ConfigurationError(
                "new-standard tasks are listed with POST /tasks: task_pages(start_time, end_time, ...)"
            )
        kind = endpoint_kind(endpoint)
        if not 1 <= page <= 1000 or not 1 <= page_size <= 500:
            raise ConfigurationError(f"page {page} must be 1..1000 and page_size {page_size} 1..500")
        return PreparedCall(
            method="GET",
            path=legacy_path(kind),
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
    def wait_target(task: AnyTask | str, endpoint: str | None) -> tuple[str, str]:
        if isinstance(task, NewStandardTask):
            return endpoint or task.endpoint or TASKS_PATH, task.id
        if isinstance(task, KlingTask):
            kind = endpoint or task.endpoint
            task_id = task.task_id
        else:
            kind, task_id = endpoint, task
        if kind is None:
            raise ConfigurationError("wait() needs the endpoint of a task given by id")
        return (kind if is_new_task_ref(kind) else endpoint_kind(kind)), task_id


def create_body(
    endpoint: str, body: Mapping[str, Any] | KlingRequest | NewStandardRequest
) -> tuple[str | None, dict[str, Any]]:
    """``(new-standard path or None, JSON body)`` of a create: a legacy body is spelt as Kling
    expects (:func:`normalise_body`); a request model of the other standard is refused."""
    raw = body.to_body() if isinstance(body, (KlingRequest, NewStandardRequest)) else dict(body)
    path = new_path(endpoint)
    if path is None:
        if isinstance(body, NewStandardRequest):
            raise ConfigurationError(
                f"a new-standard body goes to a path with the model in it (/text-to-video/kling-3.0), "
                f"not {endpoint}"
            )
        return None, normalise_body(raw)
    if isinstance(body, KlingRequest):
        raise ConfigurationError(
            f"{path} is on Kling's new standard: its body is prompt/contents + settings + options "
            "(NewStandardRequest), not a legacy request model"
        )
    return path, raw


def pick_task(call: PreparedCall, tasks: Sequence[NewStandardTask]) -> NewStandardTask:
    """The task ``GET /tasks`` answered for the one id asked; none is Kling's "not found"
    (:class:`InvalidRequest` 1203, as a legacy query of an unknown id answers)."""
    params = call.params or {}
    ident = params.get("task_ids") or params.get("external_task_ids")
    for task in tasks:
        if ident in (task.id, task.external_id):
            return task
    raise InvalidRequest(
        f"Kling has no new-standard task {', '.join(f'{k}={v}' for k, v in params.items())}",
        code=1203,
        http_status=404,
    )


def _bearer_key(auth: Auth, api_key: str | None) -> Auth | None:
    if isinstance(auth, ApiKeyAuth):
        return auth
    key = api_key or os.environ.get("KLING_API_KEY")
    return ApiKeyAuth(key) if key else None


def transport_error(exc: httpx.HTTPError, call: PreparedCall) -> ServerError:
    error = ServerError(f"could not reach Kling for {call.method} {call.path}: {type(exc).__name__}: {exc}")
    error.unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))  # no connection: nothing sent
    return error


def _checked_base_url(value: str) -> str:
    """The Kling API's base URL without its trailing slash: an http(s) URL with a host, else a
    :class:`ConfigurationError` before anything is reserved or sent."""
    try:
        url: httpx.URL | None = httpx.URL(value)
    except (httpx.InvalidURL, TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"Kling base URL {value!r} is not an http:// or https:// URL with a host; check "
            f"--base-url or {ENV_BASE_URL} (e.g. {BASE_URLS['global']})"
        )
    return value.rstrip("/")
