"""The Kling API client (httpx + PyJWT).

One source for both clients: ``async_client.py`` is written by hand and ``client.py`` is
generated from it by ``python scripts/unasync.py`` (edit the first, then run the script; CI
runs it with ``--check``). What involves no I/O lives in ``_core.py``, :mod:`.endpoints` and
:mod:`.bodies`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self, overload

import anyio
import httpx

from ..errors import ClientClosed, KlingAPIError, ServerError, TaskTimeout
from ..pricing import Catalog
from . import bodies
from ._core import (
    IDS_PER_CALL,
    AnyTask,
    ClientCore,
    PreparedCall,
    Returns,
    is_duplicate_external_id,
    page_body,
    parse_response,
    parse_result,
    pick_task,
    transport_error,
)
from .auth import Auth
from .endpoints import BILLING_BALANCE_PATH, BILLING_PACKAGE_PATH, TASKS_PATH, LegacyEndpoint
from .models import AccountCosts, FaceIdentification, KlingRequest, KlingTask
from .new_standard import (
    BalanceDeduction,
    ContentItem,
    CursorPage,
    NewStandardRequest,
    NewStandardTask,
    PackageDeduction,
)
from .retry import RetryPolicy

__all__ = ["AsyncKlingClient"]


class AsyncKlingClient(ClientCore):
    """A plain Kling API client: every endpoint of both API standards, typed answers, typed
    errors, safe retries.

    Credentials come from the arguments, else ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY``, else
    ``KLING_API_KEY``; the new standard's paths (model in the path, ``/tasks``,
    ``/account/billing/...``) take the API key only. Create bodies are checked with the
    estimator's rules before anything is sent (``validate=False`` to skip); a bad one raises
    :class:`~kling_cost.errors.PricingError`. Queries are retried with backoff on
    1302/1303/5xx/transport errors; creates only when they carry an ``external_task_id``, so
    a retry can never make a second paid task.
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
                call.method,
                self._url(call.path),
                params=call.params,
                json=call.body,
                headers=self._headers(call),
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, call) from exc
        return parse_result(call, parse_response(response))

    async def _execute(self, call: PreparedCall) -> Any:
        attempt = 0
        reached = False  # an attempt got a connection: it may have been sent
        while True:
            attempt += 1
            try:
                return await self._send_once(call)
            except KlingAPIError as exc:
                if attempt > 1 and call.external_task_id and is_duplicate_external_id(exc):
                    # an earlier attempt was accepted but its answer was lost: that task is ours
                    return await self.get_task(str(call.endpoint), external_task_id=call.external_task_id)
                reached = reached or not (isinstance(exc, ServerError) and exc.unsent)
                if not self.should_retry(call, exc, attempt):
                    if isinstance(exc, ServerError):
                        exc.unsent = not reached
                    raise
                await anyio.sleep(self.retry.delay(attempt))

    # ------------------------------------------------------------------ creates

    @overload
    async def create(self, endpoint: str, body: KlingRequest) -> KlingTask: ...

    @overload
    async def create(self, endpoint: str, body: NewStandardRequest) -> NewStandardTask: ...

    @overload
    async def create(self, endpoint: str, body: Mapping[str, Any]) -> AnyTask: ...

    async def create(
        self,
        endpoint: str,
        body: Mapping[str, Any] | KlingRequest | NewStandardRequest,
    ) -> AnyTask:
        """Create a task from a Kling JSON body (or a request model): a legacy kind or path
        (``text2video``) gives a :class:`KlingTask`, a new-standard path with the model in it
        (``/text-to-video/kling-3.0``) a :class:`NewStandardTask`."""
        task: AnyTask = await self._execute(self.prepare_create(endpoint, body))
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

    async def identify_face(
        self, video_id: str | None = None, video_url: str | None = None, **fields: Any
    ) -> FaceIdentification:
        """Two-step lip-sync, step 1 (synchronous, free): the faces in a video and a session."""
        body = {
            k: v for k, v in {"video_id": video_id, "video_url": video_url, **fields}.items() if v is not None
        }
        faces: FaceIdentification = await self._execute(self.prepare_identify_face(body))
        return faces

    async def advanced_lip_sync(
        self, session_id: str, face_choose: Sequence[Mapping[str, Any]], **fields: Any
    ) -> KlingTask:
        """Two-step lip-sync, step 2: put sound on the chosen faces of an identify-face session
        (``face_choose``: ``face_id`` with ``audio_id`` or ``sound_file``, times in ms)."""
        body = bodies.advanced_lip_sync_body(session_id, face_choose, fields)
        return await self.create("advanced-lip-sync", body)

    # ------------------------------------------------------------------ new-standard creates

    async def new_text_to_video(self, model: str, prompt: str, **fields: Any) -> NewStandardTask:
        """``POST /text-to-video/{model}``: ``fields`` are ``settings`` (``resolution``,
        ``duration`` in whole seconds, ``audio``, ``aspect_ratio``, ``multi_shot``) and
        ``options`` (``callback_url``, ``external_task_id``, ``watermark``)."""
        return await self.create(f"/text-to-video/{model}", bodies.new_body(prompt=prompt, fields=fields))

    async def new_image_to_video(
        self,
        model: str,
        image: str | None = None,
        prompt: str | None = None,
        *,
        last_frame: str | None = None,
        contents: Sequence[Mapping[str, Any] | ContentItem] | None = None,
        **fields: Any,
    ) -> NewStandardTask:
        """``POST /image-to-video/{model}``: ``image`` is the first frame (or give
        ``contents``), ``fields`` as :meth:`new_text_to_video`."""
        items = bodies.image_contents(image, prompt, last_frame, contents)
        return await self.create(f"/image-to-video/{model}", bodies.new_body(contents=items, fields=fields))

    async def omni_video(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any] | ContentItem] | None = None,
        prompt: str | None = None,
        **fields: Any,
    ) -> NewStandardTask:
        """``POST /omni-video/{model}`` (``kling-3.0-omni``, ``kling-o1``): ``contents`` items
        (``refer_image``, ``feature_video``/``base_video``, ``element``), ``prompt`` first."""
        items = bodies.omni_contents(prompt, contents)
        return await self.create(f"/omni-video/{model}", bodies.new_body(contents=items, fields=fields))

    async def motion_control(
        self, model: str, image: str, video: str, *, prompt: str | None = None, **fields: Any
    ) -> NewStandardTask:
        """``POST /motion-control/{model}``: the character ``image`` moves as in ``video``;
        ``character_orientation`` (``image``|``video``) is required. Billed on the output's length."""
        body = bodies.motion_control_body(image, video, prompt, fields)
        return await self.create(f"/motion-control/{model}", body)

    # ------------------------------------------------------------------ queries

    @overload
    async def get_task(
        self, endpoint: LegacyEndpoint, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask: ...

    @overload
    async def get_task(
        self, endpoint: str, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> AnyTask: ...

    async def get_task(
        self, endpoint: str, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> AnyTask:
        """One task by id or ``external_task_id``. A new-standard ``endpoint`` (the create path,
        or ``/tasks``) asks ``GET /tasks`` and gives a :class:`NewStandardTask`; Kling's answer
        "none" is :class:`~kling_cost.errors.InvalidRequest` 1203, as on the legacy paths."""
        call = self.prepare_get(endpoint, task_id, external_task_id)
        if call.returns == "new_tasks":
            return pick_task(call, await self._execute(call))
        task: KlingTask = await self._execute(call)
        return task

    async def get_tasks(
        self,
        task_ids: Sequence[str] | None = None,
        *,
        external_task_ids: Sequence[str] | None = None,
        per_call: int = IDS_PER_CALL,
    ) -> list[NewStandardTask]:
        """``GET /tasks`` by ``task_ids`` or ``external_task_ids`` (exactly one): the new-standard
        tasks Kling knows, in the order it answers; a long list is asked ``per_call`` ids at a
        time. Unknown ids (and legacy tasks) are simply not in the answer."""
        found: list[NewStandardTask] = []
        for call in self.prepare_tasks(task_ids, external_task_ids, per_call):
            found.extend(await self._execute(call))
        return found

    async def _pages(self, path: str, returns: Returns, body: dict[str, Any]) -> AsyncIterator[Any]:
        seen: set[str] = set()
        while True:
            page: CursorPage[Any] = await self._execute(self.prepare_page(path, returns, body))
            yield page
            cursor = page.next_cursor
            if not page.has_more or not cursor:
                return
            if not page.result:  # "more" with nothing on this page: a listing that would never end
                raise ServerError(f"Kling's {path} listing said it had more but gave an empty page")
            if cursor in seen:
                raise ServerError(f"Kling's {path} listing gave the same cursor twice")
            seen.add(cursor)
            body = {"cursor": cursor}

    def task_pages(
        self,
        start_time: int | datetime | None = None,
        end_time: int | datetime | None = None,
        *,
        status: Sequence[str] | None = None,
        product_type: Sequence[str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> AsyncIterator[CursorPage[NewStandardTask]]:
        """``POST /tasks``: the account's new-standard tasks, newest first, one page at a time
        (``limit`` 1..500 a page; ``status`` and ``product_type`` filter; ``cursor`` resumes)."""
        body = page_body(
            start_time, end_time, limit, cursor, {"status": status, "product_type": product_type}
        )
        return self._pages(TASKS_PATH, "task_page", body)

    def billing_package_pages(
        self,
        start_time: int | datetime | None = None,
        end_time: int | datetime | None = None,
        *,
        limit: int = 500,
        cursor: str | None = None,
        **filters: str | Sequence[str] | None,
    ) -> AsyncIterator[CursorPage[PackageDeduction]]:
        """``POST /account/billing/package``: one row per task charged to a resource pack,
        a page at a time; ``filters``: ``api_key_name``, ``product_type``, ``package_name``,
        ``package_id`` (a value or a list of them)."""
        body = page_body(start_time, end_time, limit, cursor, filters)
        return self._pages(BILLING_PACKAGE_PATH, "package_page", body)

    def billing_balance_pages(
        self,
        start_time: int | datetime | None = None,
        end_time: int | datetime | None = None,
        *,
        limit: int = 500,
        cursor: str | None = None,
        **filters: str | Sequence[str] | None,
    ) -> AsyncIterator[CursorPage[BalanceDeduction]]:
        """``POST /account/billing/balance``: one row per task charged to the cash balance
        (amounts in the row's ``currency``), a page at a time; filters as
        :meth:`billing_package_pages`."""
        body = page_body(start_time, end_time, limit, cursor, filters)
        return self._pages(BILLING_BALANCE_PATH, "balance_page", body)

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

    @overload
    async def wait(
        self,
        task: KlingTask,
        *,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll: float = 2.0,
        max_poll: float = 30.0,
        backoff: float = 1.5,
    ) -> KlingTask: ...

    @overload
    async def wait(
        self,
        task: NewStandardTask,
        *,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll: float = 2.0,
        max_poll: float = 30.0,
        backoff: float = 1.5,
    ) -> NewStandardTask: ...

    @overload
    async def wait(
        self,
        task: str,
        *,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll: float = 2.0,
        max_poll: float = 30.0,
        backoff: float = 1.5,
    ) -> AnyTask: ...

    async def wait(
        self,
        task: AnyTask | str,
        *,
        endpoint: str | None = None,
        timeout: float = 600.0,
        poll: float = 2.0,
        max_poll: float = 30.0,
        backoff: float = 1.5,
    ) -> AnyTask:
        """Poll until the task ends; the poll interval grows by ``backoff`` up to ``max_poll``.
        A task given by id needs its ``endpoint`` (a new-standard one: its path, or ``/tasks``).

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
