"""The cost-aware Kling client: every create estimated, reserved within budget, and settled.

One source for both guards: ``async_client.py`` is written by hand and ``client.py`` is
generated from it by ``python scripts/unasync.py`` (edit the first, then run the script; CI
runs it with ``--check``). The async guard awaits Kling, and the ledger through a view that
runs each ledger call (a short, blocking transaction) in a worker thread, so the event loop
never waits on the database; the sync guard calls both directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import anyio

from ..cache import CachePolicy
from ..errors import (
    ClientClosed,
    InvalidRequest,
    KlingAPIError,
    KlingCostError,
    PricingError,
    TaskTimeout,
    ValidationError,
)
from ..kling import bodies
from ..kling.async_client import AsyncKlingClient
from ..kling.models import AccountCosts, KlingRequest, KlingTask
from ..ledger import CacheEntry, Ledger, Reservation
from ..pricing import Catalog
from ._core import (
    CHECK,
    GONE,
    PENDING_GRACE,
    GuardCore,
    GuardedRequest,
    SettleReport,
    is_unknown_task,
)
from .async_settle import AsyncSettler

__all__ = ["AsyncCostAwareClient"]


class AsyncCostAwareClient:
    """The methods of :class:`AsyncKlingClient`, with the two-phase flow around every create.

    validate -> estimate -> per-request maximum -> dedup lookup -> reserve on every scope
    (idempotency key = the request's ``external_task_id``, generated when absent) -> submit
    -> release on an error before Kling accepted -> attach the task id -> when the task ends
    (:meth:`wait`, :meth:`get_task` or :meth:`settle_pending`): commit Kling's
    ``final_unit_deduction`` for ``succeed``, release for ``failed``.
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

    async def create(
        self,
        endpoint: str,
        body: Mapping[str, Any] | KlingRequest,
        *,
        scopes: Sequence[str] | None = None,
        dedup: bool | None = None,
        hints: Mapping[str, Any] | None = None,
    ) -> KlingTask:
        """Create a task within budget. Raises :class:`BudgetExceeded` before anything is sent
        when a budget lacks room; an identical earlier request is reused at zero cost."""
        req = self.core.prepare(endpoint, body, hints=hints)
        self.core.check_max(req)
        if self.client.closed:  # refused before anything is held (nothing could be sent)
            raise ClientClosed(
                "this guard's Kling client is closed (its with block ended, or aclose() was "
                "called); nothing was held or sent: create a new client"
            )
        use_cache = self.core.cache.enabled if dedup is None else dedup
        all_scopes = self.core.scopes_for(scopes)
        earlier = await self._ledger.get_reservation(req.key)
        if earlier is not None and earlier.status == "cached" and earlier.task_id:
            return await self.client.get_task(req.endpoint, earlier.task_id)  # served from cache before
        if earlier is not None:
            use_cache = False  # this key has its own history: resume it, never pay twice
        if use_cache:
            reused = await self._claim_or_reuse(req, all_scopes)
            if reused is not None:
                return reused
        try:
            return await self._reserve_and_submit(req, all_scopes, use_cache)
        except BaseException:
            if use_cache:  # identical requests waiting for this one must not wait in vain
                await self.settler.give_up(req)
            raise

    async def _claim_or_reuse(self, req: GuardedRequest, scopes: Sequence[str]) -> KlingTask | None:
        """Claim the fingerprint, or return the task of an identical request (free)."""
        policy = self.core.cache
        while True:
            claimed, entry = await self._ledger.cache_claim(
                req.fingerprint,
                req.endpoint,
                req.amount,
                policy.lease,
            )
            if claimed:
                return None
            task = await self._reuse(entry)
            if task is not None and task.succeeded:
                await self._ledger.record_cache_hit(
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
            # the identical request failed or vanished: claim again and pay for ours

    async def _reuse(self, entry: CacheEntry) -> KlingTask | None:
        """A succeeded entry's task, or wait for an in-flight one to end (single-flight).

        None when the identical request is gone (failed, freed, past its lease, or never
        received by Kling within ``CachePolicy.wait``): the caller claims it and pays for its own.
        """
        policy = self.core.cache
        while True:
            if entry.status == "succeeded" and entry.result is not None:
                task = KlingTask.model_validate(entry.result)
                task.endpoint = entry.endpoint
                return task
            holder = await self.settler.holder(entry)
            task_id = entry.task_id or (holder.task_id if holder is not None else None)
            if task_id is not None:
                task = await self.client.wait(task_id, endpoint=entry.endpoint, poll=policy.wait_poll)
                await self.settler.settle_by_task(task)
                return task
            verdict = self.core.verdict(entry, holder)
            if verdict == CHECK and holder is not None:
                # ask Kling about the holder's key; if it cannot be asked, raise (never pay twice)
                known = await self._find(entry.endpoint, holder.idempotency_key, strict=True)
                if known is not None:
                    await self.settler.adopt(entry, holder, known)
                    entry = replace(entry, task_id=known.task_id)
                    continue
                verdict = GONE
            if verdict == GONE:
                await self._ledger.cache_forget(entry)
                return None
            await anyio.sleep(policy.wait_poll)
            current = await self._ledger.cache_lookup(entry.fingerprint)
            if current is None:
                return None
            entry = current

    async def _reserve_and_submit(
        self,
        req: GuardedRequest,
        scopes: Sequence[str],
        cached: bool,
    ) -> KlingTask:
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
            known = await self._find(req.endpoint, req.key, strict=True)
            if known is not None:
                return await self._accepted(reservation, known, req)
        return await self._submit(req, reservation)

    async def _await_holder(self, req: GuardedRequest, reservation: Reservation) -> KlingTask | None:
        """Wait for the caller holding this key; None if it died before sending (take over)."""
        deadline = reservation.created_at + PENDING_GRACE
        while True:
            known = await self._find(req.endpoint, req.key, strict=True)
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

    async def _submit(self, req: GuardedRequest, reservation: Reservation) -> KlingTask:
        """Send the request; free the hold only when Kling surely did not accept it."""
        try:
            task = await self.client.create(req.endpoint, req.body)
        except (PricingError, ValidationError, ClientClosed):
            await self._ledger.release(reservation)  # refused here: nothing was sent
            raise
        except Exception as exc:
            # Kling refused it, or an earlier attempt's answer was lost: ask before freeing
            try:
                known = await self._find(req.endpoint, req.key, strict=True)
            except KlingAPIError:
                raise exc from None  # cannot tell: keep the hold (its lease or settle decides)
            if known is None:
                await self._ledger.release(reservation)
                raise
            task = known
        return await self._accepted(reservation, task, req)

    async def _find(self, endpoint: str, key: str, *, strict: bool = False) -> KlingTask | None:
        """The task Kling knows under ``external_task_id=key``; None when Kling says it has
        none. Other errors: raised with ``strict``, else None."""
        try:
            return await self.client.get_task(endpoint, external_task_id=key)
        except KlingAPIError as exc:
            if is_unknown_task(exc):
                return None
            if strict:
                raise
            return None

    async def _accepted(self, reservation: Reservation, task: KlingTask, req: GuardedRequest) -> KlingTask:
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

    # -- queries and settlement ---------------------------------------------------------------

    async def get_task(
        self, endpoint: str, task_id: str | None = None, *, external_task_id: str | None = None
    ) -> KlingTask:
        """Query a task; one that has ended is settled in the ledger on the way."""
        task = await self.client.get_task(endpoint, task_id, external_task_id=external_task_id)
        await self.settler.settle_by_task(task)
        return task

    async def list_tasks(self, endpoint: str, page: int = 1, page_size: int = 30) -> list[KlingTask]:
        return await self.client.list_tasks(endpoint, page, page_size)

    async def account_costs(self, *args: Any, **kwargs: Any) -> AccountCosts:
        return await self.client.account_costs(*args, **kwargs)

    async def wait(self, task: KlingTask | str, *, timeout: float = 600.0, **options: Any) -> KlingTask:
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
                await self.settler.renew(task if isinstance(task, KlingTask) else None)
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
            endpoint = str(res.metadata.get("endpoint") or "text2video")
            try:
                if res.task_id is None:
                    task = await self._find(endpoint, res.idempotency_key, strict=True)
                else:
                    task = await self.client.get_task(endpoint, res.task_id)
                await self.settler.settle_found(res, task, now, report)
            except KlingCostError as exc:
                report.errors.append(f"{res.id}: {exc}")
        return report
