"""The cost-aware Kling client: every create estimated, reserved within budget, and settled.

One source for both guards: ``async_client.py`` is written by hand and ``client.py`` is
generated from it by ``python scripts/unasync.py`` (edit the first, then run the script; CI
runs it with ``--check``). The async guard awaits Kling, and the ledger through a view that
runs each ledger call (a short, blocking transaction) in a worker thread, so the event loop
never waits on the database; the sync guard calls both directly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, overload

import anyio

from ..cache import CachePolicy
from ..errors import (
    ClientClosed,
    ConfigurationError,
    InvalidRequest,
    KlingAPIError,
    KlingCostError,
    PricingError,
    ServerError,
    TaskTimeout,
    ValidationError,
)
from ..kling import bodies
from ..kling.async_client import AsyncKlingClient
from ..kling.endpoints import LegacyEndpoint
from ..kling.models import AccountCosts, FaceIdentification, KlingRequest, KlingTask
from ..kling.new_standard import (
    BalanceDeduction,
    ContentItem,
    CursorPage,
    NewStandardRequest,
    NewStandardTask,
    PackageDeduction,
)
from ..kling.tasks import IDS_PER_CALL, AnyTask, is_new_task_ref
from ..ledger import Ledger, Reservation
from ..pricing import Catalog
from ._core import (
    PENDING_GRACE,
    GuardCore,
    GuardedRequest,
    SettleReport,
)
from .async_flight import AsyncSingleFlight
from .async_settle import AsyncSettler

__all__ = ["AsyncCostAwareClient"]


class AsyncCostAwareClient:
    """The methods of :class:`AsyncKlingClient`, with the two-phase flow around every create.

    validate -> estimate -> per-request maximum -> dedup lookup -> reserve on every scope
    (idempotency key = the request's ``external_task_id``, generated when absent) -> submit
    -> release on an error before Kling accepted -> attach the task id -> when the task ends
    (:meth:`wait`, :meth:`get_task` or :meth:`settle_pending`): commit what Kling charged
    (``final_unit_deduction``, or the ``unit`` entries of a new-standard task's ``billing[]``),
    release a failed task. Both API standards: a new-standard path
    (``/text-to-video/kling-3.0``) carries the idempotency key as ``options.external_task_id``
    and is found again with ``GET /tasks?external_task_ids=``.
    """

    def __init__(
        self,
        client: AsyncKlingClient,
        ledger: Ledger,
        *,
        catalog: Catalog | str | None = "kling-api",
        scopes: Iterable[str] = (),
        ttl: timedelta = timedelta(minutes=30),
        cache: CachePolicy | bool = True,
        max_per_request: Decimal | int | str | None = None,
        task_ttl: timedelta = timedelta(hours=2),
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.core = GuardCore(
            ledger,
            catalog=catalog,
            scopes=scopes,
            ttl=ttl,
            cache=cache,
            max_per_request=max_per_request,
            task_ttl=task_ttl,
        )
        self.settler = AsyncSettler(ledger, self.core)
        self.flight = AsyncSingleFlight(client, self.settler)
        self._ledger = self.settler.ledger  # the ledger as this client calls it

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- creates ------------------------------------------------------------------------------

    @overload
    async def create(
        self,
        endpoint: str,
        body: KlingRequest,
        *,
        scopes: Sequence[str] | None = None,
        dedup: bool | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> KlingTask: ...

    @overload
    async def create(
        self,
        endpoint: str,
        body: NewStandardRequest,
        *,
        scopes: Sequence[str] | None = None,
        dedup: bool | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> NewStandardTask: ...

    @overload
    async def create(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        *,
        scopes: Sequence[str] | None = None,
        dedup: bool | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> AnyTask: ...

    async def create(
        self,
        endpoint: str,
        body: Mapping[str, Any] | KlingRequest | NewStandardRequest,
        *,
        scopes: Sequence[str] | None = None,
        dedup: bool | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> AnyTask:
        """Create a task within budget (a legacy kind or path, or a new-standard path).
        Raises :class:`BudgetExceeded` before anything is sent when a budget lacks room; an
        identical earlier request is reused at zero cost."""
        req = self.core.prepare(endpoint, body, hints=hints)
        self.core.check_max(req)
        if self.client.closed:  # refused before anything is held (nothing could be sent)
            raise ClientClosed(
                "this guard's Kling client is closed (its with block ended, or aclose() was "
                "called); nothing was held or sent: create a new client"
            )
        if is_new_task_ref(req.endpoint):  # sent, queried and found again with the API key only
            self.client.require_api_key(f"POST {req.endpoint}")
        use_cache = self.core.cache.enabled if dedup is None else dedup
        all_scopes = self.core.scopes_for(scopes)
        earlier = await self._ledger.get_reservation(req.key)
        if earlier is not None and earlier.status == "cached" and earlier.task_id:
            return await self.client.get_task(req.endpoint, earlier.task_id)  # served from cache before
        if earlier is not None:
            use_cache = False  # this key has its own history: resume it, never pay twice
        if use_cache:
            reused = await self.flight.claim_or_reuse(req, all_scopes)
            if reused is not None:
                return reused
        try:
            return await self._reserve_and_submit(req, all_scopes, use_cache)
        except BaseException:
            if use_cache:  # identical requests waiting for this one must not wait in vain
                await self.settler.give_up(req)
            raise

    async def _reserve_and_submit(
        self,
        req: GuardedRequest,
        scopes: Sequence[str],
        cached: bool,
    ) -> AnyTask:
        reservation = await self._ledger.reserve(
            req.amount,
            scopes,
            idempotency_key=req.key,
            ttl=self.core.ttl,
            metadata=req.metadata,
            unit=req.unit,
            catalog=req.catalog,
            catalog_date=req.catalog_date,
        )
        if cached:
            await self._ledger.cache_attach(req.fingerprint, reservation_id=reservation.id)
        if reservation.task_id is not None:  # this key was sent before: never pay twice
            return await self.get_task(req.endpoint, reservation.task_id)
        if reservation.status != "reserved":
            raise InvalidRequest(
                f"request {req.key} was already settled ({reservation.status}) without a task"
            )
        if not reservation.fresh:  # another caller holds this key and may be sending it now
            taken = await self._await_holder(req, reservation)
            if taken is not None:
                return taken
        elif reservation.revived:  # an earlier attempt may have reached Kling after all
            known = await self.flight.find(req.endpoint, req.key, strict=True)
            if known is not None:
                return await self._accepted(reservation, known, req)
        return await self._submit(req, reservation)

    async def _await_holder(self, req: GuardedRequest, reservation: Reservation) -> AnyTask | None:
        """Wait for the caller holding this key; None if it died before sending (take over)."""
        deadline = reservation.created_at + PENDING_GRACE
        while True:
            known = await self.flight.find(req.endpoint, req.key, strict=True)
            if known is not None:
                return await self._accepted(reservation, known, req)
            current = await self._ledger.get_reservation(reservation.id)
            if current is not None and current.task_id is not None:
                return await self.get_task(req.endpoint, current.task_id)
            if current is None or current.status != "reserved":
                raise InvalidRequest(
                    f"request {req.key} was settled ({'gone' if current is None else current.status}) "
                    "by another caller before Kling accepted it"
                )
            if self._ledger.clock() >= deadline:
                return None
            await anyio.sleep(self.core.cache.wait_poll)

    async def _submit(self, req: GuardedRequest, reservation: Reservation) -> AnyTask:
        """Send the request; free the hold only when Kling surely did not accept it."""
        try:
            task = await self.client.create(req.endpoint, req.body)
        except (PricingError, ValidationError, ClientClosed, ConfigurationError):
            await self._ledger.release(reservation)  # refused here: nothing was sent
            raise
        except ServerError as exc:
            if not exc.unsent:
                return await self._unknown(req, reservation, exc)
            await self._ledger.release(reservation)  # no attempt reached Kling: nothing to pay for
            raise
        except Exception as exc:
            return await self._unknown(req, reservation, exc)
        return await self._accepted(reservation, task, req)

    async def _unknown(self, req: GuardedRequest, reservation: Reservation, exc: Exception) -> AnyTask:
        """Kling refused the request, or an earlier attempt's answer was lost: ask before freeing."""
        try:
            known = await self.flight.find(req.endpoint, req.key, strict=True)
        except KlingAPIError:
            raise exc from None  # cannot tell: keep the hold (its lease or settle decides)
        if known is None:
            await self._ledger.release(reservation)
            raise exc
        return await self._accepted(reservation, known, req)

    async def _accepted(self, reservation: Reservation, task: AnyTask, req: GuardedRequest) -> AnyTask:
        reservation = await self._ledger.attach_task(reservation, task.task_id, ttl=self.core.task_ttl)
        if self.core.cache.enabled and "fingerprint" in req.metadata:
            await self._ledger.cache_attach(req.fingerprint, task_id=task.task_id)
        if task.done:
            await self.settler.settle(reservation, task)
        return task

    async def text_to_video(self, prompt: str, **fields: Any) -> KlingTask:
        return await self.create("text2video", bodies.text_to_video_body(prompt, fields))

    async def image_to_video(self, image: str, prompt: str | None = None, **fields: Any) -> KlingTask:
        return await self.create("image2video", bodies.image_to_video_body(image, prompt, fields))

    async def multi_image_to_video(
        self, images: Sequence[str | Mapping[str, Any]], prompt: str, **fields: Any
    ) -> KlingTask:
        return await self.create("multi-image2video", bodies.multi_image_body(images, prompt, fields))

    async def extend_video(
        self,
        video_id: str,
        prompt: str | None = None,
        *,
        hints: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> KlingTask:
        """``hints={"model": ..., "mode": ...}`` of the source video price it exactly; without
        them the most expensive extension in the catalog is reserved (the commit is exact)."""
        return await self.create("video-extend", bodies.extend_body(video_id, prompt, fields), hints=hints)

    async def lip_sync(
        self,
        input: Mapping[str, Any] | None = None,
        *,
        callback_url: str | None = None,
        external_task_id: str | None = None,
        hints: Mapping[str, Any] | None = None,
        **input_fields: Any,
    ) -> KlingTask:
        """``hints={"duration": seconds}`` of the source video prices it exactly (else 10 s)."""
        body = bodies.lip_sync_body(input, callback_url, external_task_id, input_fields)
        return await self.create("lip-sync", body, hints=hints)

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
        """Two-step lip-sync, step 1: free (no task), so nothing is reserved."""
        return await self.client.identify_face(video_id, video_url, **fields)

    async def advanced_lip_sync(
        self,
        session_id: str,
        face_choose: Sequence[Mapping[str, Any]],
        *,
        hints: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> KlingTask:
        """Two-step lip-sync, step 2. ``hints={"duration": seconds}`` of the video prices it
        exactly (e.g. the last ``end_time`` of identify-face's ``face_data``, in ms / 1000);
        else a 10 s video is reserved. The commit is what Kling charged."""
        body = bodies.advanced_lip_sync_body(session_id, face_choose, fields)
        return await self.create("advanced-lip-sync", body, hints=hints)

    # -- new-standard creates -----------------------------------------------------------------

    async def new_text_to_video(self, model: str, prompt: str, **fields: Any) -> NewStandardTask:
        """``POST /text-to-video/{model}`` within budget (fields as the Kling client's)."""
        body = bodies.new_body(prompt=prompt, fields=fields)
        return await self.create(f"/text-to-video/{model}", body)

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
        items = bodies.image_contents(image, prompt, last_frame, contents)
        return await self.create(f"/image-to-video/{model}", bodies.new_body(contents=items, fields=fields))

    async def omni_video(
        self,
        model: str,
        contents: Sequence[Mapping[str, Any] | ContentItem] | None = None,
        prompt: str | None = None,
        **fields: Any,
    ) -> NewStandardTask:
        items = bodies.omni_contents(prompt, contents)
        return await self.create(f"/omni-video/{model}", bodies.new_body(contents=items, fields=fields))

    async def motion_control(
        self, model: str, image: str, video: str, *, prompt: str | None = None, **fields: Any
    ) -> NewStandardTask:
        """Reserved at the longest output (30 s); committed on the output's length."""
        body = bodies.motion_control_body(image, video, prompt, fields)
        return await self.create(f"/motion-control/{model}", body)

    # -- queries and settlement ---------------------------------------------------------------

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
        """Query a task; one that has ended is settled in the ledger on the way."""
        task = await self.client.get_task(endpoint, task_id, external_task_id=external_task_id)
        await self.settler.settle_by_task(task)
        return task

    async def get_tasks(
        self,
        task_ids: Sequence[str] | None = None,
        *,
        external_task_ids: Sequence[str] | None = None,
        per_call: int = IDS_PER_CALL,
    ) -> list[NewStandardTask]:
        """``GET /tasks`` (batched); each task that has ended is settled on the way."""
        tasks = await self.client.get_tasks(task_ids, external_task_ids=external_task_ids, per_call=per_call)
        for task in tasks:
            await self.settler.settle_by_task(task)
        return tasks

    def task_pages(
        self,
        start_time: int | datetime | None = None,
        end_time: int | datetime | None = None,
        **options: Any,
    ) -> AsyncIterator[CursorPage[NewStandardTask]]:
        """The Kling client's ``task_pages`` (a listing: nothing is settled)."""
        return self.client.task_pages(start_time, end_time, **options)

    def billing_package_pages(
        self,
        *args: Any,
        **options: Any,
    ) -> AsyncIterator[CursorPage[PackageDeduction]]:
        return self.client.billing_package_pages(*args, **options)

    def billing_balance_pages(
        self,
        *args: Any,
        **options: Any,
    ) -> AsyncIterator[CursorPage[BalanceDeduction]]:
        return self.client.billing_balance_pages(*args, **options)

    async def list_tasks(self, endpoint: str, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        return await self.client.list_tasks(endpoint, page, page_size)

    async def account_costs(self, *args: Any, **kwargs: Any) -> AccountCosts:
        return await self.client.account_costs(*args, **kwargs)

    @overload
    async def wait(self, task: KlingTask, *, timeout: float = 600.0, **options: Any) -> KlingTask: ...

    @overload
    async def wait(
        self,
        task: NewStandardTask,
        *,
        timeout: float = 600.0,
        **options: Any,
    ) -> NewStandardTask: ...

    @overload
    async def wait(self, task: str, *, timeout: float = 600.0, **options: Any) -> AnyTask: ...

    async def wait(self, task: AnyTask | str, *, timeout: float = 600.0, **options: Any) -> AnyTask:
        """The Kling client's ``wait``, keeping the reservation's lease alive, then settle the
        ended task in the ledger."""
        deadline = time.monotonic() + timeout
        step = max(1.0, self.core.task_ttl.total_seconds() / 2)
        while True:
            left = deadline - time.monotonic()
            try:
                done = await self.client.wait(task, timeout=max(0.0, min(step, left)), **options)
                break
            except TaskTimeout:
                if time.monotonic() >= deadline:
                    raise
                await self.settler.renew(None if isinstance(task, str) else task)
        await self.settler.settle_by_task(done)
        return done

    async def settle_pending(self, *, lookback: timedelta = timedelta(days=2)) -> SettleReport:
        """Finish the job for every unsettled reservation (after a crash, or periodically):
        poll its task, commit or release what has ended, keep running leases alive, free
        holds whose request Kling never accepted (only holds of requests sent under their key,
        as this client sends them: a ``BudgetGuard`` hold is left to its owner and its lease),
        and find tasks Kling accepted for holds that expired before their task was attached
        (within ``lookback``)."""
        report = SettleReport()
        now = self._ledger.clock()
        for res in await self.settler.unsettled(now - lookback):
            endpoint = str(res.metadata.get("endpoint") or "text2video")  # a new-standard path too
            try:
                if res.task_id is None:
                    task = await self.flight.find(endpoint, res.idempotency_key, strict=True)
                else:
                    task = await self.client.get_task(endpoint, res.task_id)
                await self.settler.settle_found(res, task, now, report)
            except KlingCostError as exc:
                report.errors.append(f"{res.id}: {exc}")
        return report
