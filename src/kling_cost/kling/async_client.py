"""The Kling API client (httpx + PyJWT).

One source for both clients: ``async_client.py`` is written by hand and ``client.py`` is
generated from it by ``python scripts/unasync.py`` (edit the first, then run the script; CI
runs it with ``--check``). What involves no I/O lives in ``_core.py``, :mod:`.endpoints` and
:mod:`.bodies`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import httpx

from ..errors import ClientClosed, KlingAPIError, TaskTimeout
from ..pricing import Catalog
from . import bodies
from ._core import (
    ClientCore,
    PreparedCall,
    is_duplicate_external_id,
    parse_response,
    parse_result,
    transport_error,
)
from .auth import Auth
from .models import AccountCosts, KlingRequest, KlingTask
from .retry import RetryPolicy

__all__ = ["AsyncKlingClient"]


class AsyncKlingClient(ClientCore):
    """A plain Kling API client: every endpoint, typed answers, typed errors, safe retries.

    Credentials come from the arguments, else ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY``, else
    ``KLING_API_KEY``. Create bodies are checked with the estimator's rules before anything
    is sent (``validate=False`` to skip); a bad one raises :class:`~kling_cost.errors.PricingError`.
    Queries are retried with backoff on 1302/1303/5xx/transport errors; creates only when
    they carry an ``external_task_id``, so a retry can never make a second paid task.
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        region: Literal["global", "china"] = "global",
        timeout: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        validate: bool = True,
        catalog: Catalog | str | None = "kling-api",
        token_ttl: int = 1800,
        token_refresh_margin: int = 60,
        auth: Auth | None = None,
    ) -> None:
        super().__init__(
            access_key,
            secret_key,
            api_key=api_key,
            base_url=base_url,
            region=region,
            timeout=timeout,
            retry=retry,
            validate=validate,
            catalog=catalog,
            token_ttl=token_ttl,
            token_refresh_margin=token_refresh_margin,
            auth=auth,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Close the HTTP connection pool (only if this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    @property
    def closed(self) -> bool:
        """Whether the client's HTTP connection pool was closed (:meth:`aclose`, the end of its
        ``with`` block, or by whoever owns the ``http_client`` it was given): it sends nothing."""
        return self._http.is_closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ transport

    async def _send_once(self, call: PreparedCall) -> Any:
        if self.closed:  # httpx would raise a bare RuntimeError; nothing is sent either way
            raise ClientClosed(
                "this Kling client is closed (its with block ended, or aclose() was called); "
                "nothing was sent: create a new client"
            )
        try:
            response = await self._http.request(
                call.method, self._url(call.path), params=call.params, json=call.body, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, call) from exc
        return parse_result(call, parse_response(response))

    async def _execute(self, call: PreparedCall) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send_once(call)
            except KlingAPIError as exc:
                if attempt > 1 and call.external_task_id and is_duplicate_external_id(exc):
                    # an earlier attempt was accepted but its answer was lost: that task is ours
                    return await self.get_task(str(call.endpoint), external_task_id=call.external_task_id)
                if not self.should_retry(call, exc, attempt):
                    raise
                await anyio.sleep(self.retry.delay(attempt))

    # ------------------------------------------------------------------ creates

    async def create(self, endpoint: str, body: Mapping[str, Any] | KlingRequest) -> KlingTask:
        """Create a task on any endpoint from a Kling JSON body (or a request model)."""
        task: KlingTask = await self._execute(self.prepare_create(endpoint, body))
        return task

    async def text_to_video(self, prompt: str, **fields: Any) -> KlingTask:
        return await self.create("text2video", bodies.text_to_video_body(prompt, fields))

    async def image_to_video(self, image: str, prompt: str | None = None, **fields: Any) -> KlingTask:
        return await self.create("image2video", bodies.image_to_video_body(image, prompt, fields))

    async def multi_image_to_video(
        self, images: Sequence[str | Mapping[str, Any]], prompt: str, **fields: Any
    ) -> KlingTask:
        return await self.create("multi-image2video", bodies.multi_image_body(images, prompt, fields))

    async def extend_video(self, video_id: str, prompt: str | None = None, **fields: Any) -> KlingTask:
        return await self.create("video-extend", bodies.extend_body(video_id, prompt, fields))

    async def lip_sync(
        self,
        input: Mapping[str, Any] | None = None,
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **input_fields: Any,
    ) -> KlingTask:
        body = bodies.lip_sync_body(input, callback_url, external_task_id, input_fields)
        return await self.create("lip-sync", body)

    async def effects(
        self,
        effect_scene: str,
        input: Mapping[str, Any] | None = None,
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        **input_fields: Any,
    ) -> KlingTask:
        body = bodies.effects_body(effect_scene, input, callback_url, external_task_id, input_fields)
        return await self.create("effects", body)

    async def generate_images(self, prompt: str, **fields: Any) -> KlingTask:
        return await self.create("image", bodies.images_body(prompt, fields))

    async def virtual_try_on(self, human_image: str, cloth_image: str, **fields: Any) -> KlingTask:
        return await self.create("tryon", bodies.tryon_body(human_image, cloth_image, fields))

    # ------------------------------------------------------------------ queries

    async def get_task(
        self, endpoint: str, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        task: KlingTask = await self._execute(self.prepare_get(endpoint, task_id, external_task_id))
        return task

    async def list_tasks(self, endpoint: str, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        tasks: list[KlingTask] = await self._execute(self.prepare_list(endpoint, page, page_size))
        return tasks

    async def account_costs(
        self,
        start_time: int | datetime | None = None,
        end_time: int | datetime | None = None,
        resource_pack_name: str | None = None,
    ) -> AccountCosts:
        """The account's resource packs (``start_time``/``end_time``: ms or aware datetimes;
        default: the last 365 days)."""
        now = datetime.now(UTC)
        start = start_time if start_time is not None else now - timedelta(days=365)
        end = end_time if end_time is not None else now
        costs: AccountCosts = await self._execute(self.prepare_costs(start, end, resource_pack_name))
        return costs

    async def wait(
        self,
        task: KlingTask | str,
        *,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll: float = 2.0,
        max_poll: float = 30.0,
        backoff: float = 1.5,
    ) -> KlingTask:
        """Poll until the task ends; the poll interval grows by ``backoff`` up to ``max_poll``.

        Raises :class:`~kling_cost.errors.TaskTimeout` (with ``task_id``) after ``timeout``
        seconds: the task may still finish and be billed.
        """
        kind, task_id = self.wait_target(task, endpoint)
        deadline = time.monotonic() + timeout
        interval = poll
        while True:
            current = await self.get_task(kind, task_id)
            if current.done:
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise TaskTimeout(
                    f"task {task_id} did not end within {timeout:g} s (last status {current.task_status}); "
                    "it may still finish and be billed",
                    task_id=task_id,
                    last_status=current.task_status,
                )
            await anyio.sleep(min(interval, left))
            interval = min(max_poll, interval * backoff)
