"""``AsyncCostAwareClient``: the asyncio twin of :class:`CostAwareClient`.

Kling calls are awaited; ledger calls (short, blocking database transactions) run in a
worker thread so the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

from ..cache import CachePolicy
from ..errors import InvalidRequest, KlingAPIError, PricingError, TaskTimeout, ValidationError
from ..kling import _bodies
from ..kling.async_client import AsyncKlingClient
from ..kling.models import KlingRequest, KlingTask
from ..ledger import CacheEntry, Ledger, Reservation
from ..pricing import Catalog
from ._core import CHECK, GONE, PENDING_GRACE, GuardCore, GuardedRequest, is_unknown_task

__all__ = ["AsyncCostAwareClient"]


class AsyncCostAwareClient:
    """The methods of :class:`AsyncKlingClient`, with the two-phase flow around every create
    (see :class:`CostAwareClient`)."""

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

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def create(
        self,
        endpoint: str,
        body: Mapping[str, Any] | KlingRequest,
        *,
        scopes: Sequence[str] | None = None,
        dedup: bool | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> KlingTask:
        req = await asyncio.to_thread(self.core.prepare, endpoint, body, hints=hints)
        self.core.check_max(req)
        use_cache = self.core.cache.enabled if dedup is None else dedup
        all_scopes = self.core.scopes_for(scopes)
        earlier = await asyncio.to_thread(self.ledger.get_reservation, req.key)
        if earlier is not None and earlier.status == "cached" and earlier.task_id:
            return await self.client.get_task(req.endpoint, earlier.task_id)
        if earlier is not None:
            use_cache = False
        if use_cache:
            reused = await self._claim_or_reuse(req, all_scopes)
            if reused is not None:
                return reused
        try:
            return await self._reserve_and_submit(req, all_scopes, use_cache)
        except BaseException:
            if use_cache:
                await asyncio.to_thread(self.core.give_up, req)
            raise

    async def _claim_or_reuse(self, req: GuardedRequest, scopes: Sequence[str]) -> KlingTask | None:
        policy = self.core.cache
        while True:
            claimed, entry = await asyncio.to_thread(
                self.ledger.cache_claim, req.fingerprint, req.endpoint, req.amount, policy.lease
            )
            if claimed:
                return None
            task = await self._reuse(entry)
            if task is not None and task.succeeded:
                await asyncio.to_thread(
                    self.ledger.record_cache_hit,
                    req.amount,
                    scopes,
                    idempotency_key=req.key,
                    task_id=task.task_id,
                    metadata={**req.metadata, "cache": entry.status},
                    unit=req.unit,
                    catalog=req.catalog,
                    catalog_date=req.catalog_date,
                )
                return task

    async def _reuse(self, entry: CacheEntry) -> KlingTask | None:
        policy = self.core.cache
        while True:
            if entry.status == "succeeded" and entry.result is not None:
                task = KlingTask.model_validate(entry.result)
                task.endpoint = entry.endpoint
                return task
            holder = await asyncio.to_thread(self.core.holder, entry)
            task_id = entry.task_id or (holder.task_id if holder is not None else None)
            if task_id is not None:
                task = await self.client.wait(task_id, endpoint=entry.endpoint, poll=policy.wait_poll)
                await self._settle_by_task(task)
                return task
            verdict = await asyncio.to_thread(self.core.verdict, entry, holder)
            if verdict == CHECK and holder is not None:
                known = await self._find(entry.endpoint, holder.idempotency_key, strict=True)
                if known is not None:
                    await asyncio.to_thread(self.core.adopt, entry, holder, known)
                    entry = replace(entry, task_id=known.task_id)
                    continue
                verdict = GONE
            if verdict == GONE:
                await asyncio.to_thread(self.ledger.cache_forget, entry)
                return None
            await asyncio.sleep(policy.wait_poll)
            current = await asyncio.to_thread(self.ledger.cache_lookup, entry.fingerprint)
            if current is None:
                return None
            entry = current

    async def _reserve_and_submit(
        self, req: GuardedRequest, scopes: Sequence[str], cached: bool
    ) -> KlingTask:
        reservation = await asyncio.to_thread(
            self.ledger.reserve,
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
            await asyncio.to_thread(self.ledger.cache_attach, req.fingerprint, reservation_id=reservation.id)
        if reservation.task_id is not None:
            return await self.get_task(req.endpoint, reservation.task_id)
        if reservation.status != "reserved":
            raise InvalidRequest(
                f"request {req.key} was already settled ({reservation.status}) without a task"
            )
        if not reservation.fresh:
            taken = await self._await_holder(req, reservation)
            if taken is not None:
                return taken
        elif reservation.revived:
            known = await self._find(req.endpoint, req.key, strict=True)
            if known is not None:
                return await self._accepted(reservation, known, req)
        return await self._submit(req, reservation)

    async def _await_holder(self, req: GuardedRequest, reservation: Reservation) -> KlingTask | None:
        deadline = reservation.created_at + PENDING_GRACE
        while True:
            known = await self._find(req.endpoint, req.key, strict=True)
            if known is not None:
                return await self._accepted(reservation, known, req)
            current = await asyncio.to_thread(self.ledger.get_reservation, reservation.id)
            if current is not None and current.task_id is not None:
                return await self.get_task(req.endpoint, current.task_id)
            if current is None or current.status != "reserved":
                raise InvalidRequest(
                    f"request {req.key} was settled by another caller before Kling accepted it"
                )
            if self.ledger.clock() >= deadline:
                return None
            await asyncio.sleep(self.core.cache.wait_poll)

    async def _submit(self, req: GuardedRequest, reservation: Reservation) -> KlingTask:
        try:
            task = await self.client.create(req.endpoint, req.body)
        except (PricingError, ValidationError):
            await asyncio.to_thread(self.ledger.release, reservation)
            raise
        except Exception as exc:
            try:
                known = await self._find(req.endpoint, req.key, strict=True)
            except KlingAPIError:
                raise exc from None
            if known is None:
                await asyncio.to_thread(self.ledger.release, reservation)
                raise
            task = known
        return await self._accepted(reservation, task, req)

    async def _find(self, endpoint: str, key: str, *, strict: bool = False) -> KlingTask | None:
        try:
            return await self.client.get_task(endpoint, external_task_id=key)
        except KlingAPIError as exc:
            if is_unknown_task(exc):
                return None
            if strict:
                raise
            return None

    async def _accepted(self, reservation: Reservation, task: KlingTask, req: GuardedRequest) -> KlingTask:
        reservation = await asyncio.to_thread(
            self.ledger.attach_task, reservation, task.task_id, ttl=self.core.task_ttl
        )
        if self.core.cache.enabled and "fingerprint" in req.metadata:
            await asyncio.to_thread(self.ledger.cache_attach, req.fingerprint, task_id=task.task_id)
        if task.done:
            await asyncio.to_thread(self.core.settle, reservation, task)
        return task

    async def text_to_video(self, prompt: str, **fields: Any) -> KlingTask:
        return await self.create("text2video", _bodies.text_to_video_body(prompt, fields))

    async def image_to_video(self, image: str, prompt: str | None = None, **fields: Any) -> KlingTask:
        return await self.create("image2video", _bodies.image_to_video_body(image, prompt, fields))

    async def generate_images(self, prompt: str, **fields: Any) -> KlingTask:
        return await self.create("image", _bodies.images_body(prompt, fields))

    async def virtual_try_on(self, human_image: str, cloth_image: str, **fields: Any) -> KlingTask:
        return await self.create("tryon", _bodies.tryon_body(human_image, cloth_image, fields))

    async def get_task(
        self, endpoint: str, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        task = await self.client.get_task(endpoint, task_id, external_task_id=external_task_id)
        await self._settle_by_task(task)
        return task

    async def wait(self, task: KlingTask | str, *, timeout: float = 600.0, **options: Any) -> KlingTask:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        step = max(1.0, self.core.task_ttl.total_seconds() / 2)
        while True:
            left = deadline - loop.time()
            try:
                done = await self.client.wait(task, timeout=max(0.0, min(step, left)), **options)
                break
            except TaskTimeout:
                if loop.time() >= deadline:
                    raise
                await asyncio.to_thread(self.core.renew, task if isinstance(task, KlingTask) else None)
        await self._settle_by_task(done)
        return done

    async def _settle_by_task(self, task: KlingTask) -> None:
        if not task.done:
            return

        def settle() -> None:
            ref = task.external_task_id
            found = self.ledger.get_reservation(ref) if ref else None
            self.core.settle_task(found or self.ledger.reservation_for_task(task.task_id), task)

        await asyncio.to_thread(settle)
