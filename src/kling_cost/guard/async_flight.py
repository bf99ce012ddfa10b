"""Dedup and single-flight for one guarded client: an identical request that succeeded is
reused at zero cost, one in flight is waited for instead of paid twice, and a caller never
waits in vain (see ``GuardCore.verdict``).

One source for both guards: ``async_flight.py`` is written by hand and ``flight.py`` is
generated from it by ``python scripts/unasync.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import anyio  # sync twin: import time

from ..errors import KlingAPIError
from ..kling.async_client import AsyncKlingClient
from ..kling.tasks import AnyTask
from ..ledger import CacheEntry
from ._core import CHECK, GONE, GuardedRequest, is_unknown_task, task_document
from .async_settle import AsyncSettler

__all__ = ["AsyncSingleFlight"]


class AsyncSingleFlight:
    """Finding a request's task on Kling, and sharing one task among identical requests."""

    def __init__(self, client: AsyncKlingClient, settler: AsyncSettler) -> None:
        self.client = client
        self.settler = settler
        self.core = settler.core
        self.ledger = settler.ledger

    async def find(self, endpoint: str, key: str, *, strict: bool = False) -> AnyTask | None:
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

    async def claim_or_reuse(self, req: GuardedRequest, scopes: Sequence[str]) -> AnyTask | None:
        """Claim the fingerprint, or return the task of an identical request (free)."""
        policy = self.core.cache
        while True:
            claimed, entry = await self.ledger.cache_claim(
                req.fingerprint,
                req.endpoint,
                req.amount,
                policy.lease,
            )
            if claimed:
                return None
            task = await self.reuse(entry)
            if task is not None and task.succeeded:
                await self.ledger.record_cache_hit(
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

    async def reuse(self, entry: CacheEntry) -> AnyTask | None:
        """A succeeded entry's task, or wait for an in-flight one to end (single-flight).

        None when the identical request is gone (failed, freed, past its lease, or never
        received by Kling within ``CachePolicy.wait``): the caller claims it and pays for its own.
        """
        policy = self.core.cache
        while True:
            if entry.status == "succeeded" and entry.result is not None:
                return task_document(entry.endpoint, entry.result)
            holder = await self.settler.holder(entry)
            task_id = entry.task_id or (holder.task_id if holder is not None else None)
            if task_id is not None:
                task = await self.client.wait(task_id, endpoint=entry.endpoint, poll=policy.wait_poll)
                await self.settler.settle_by_task(task)
                return task
            verdict = self.core.verdict(entry, holder)
            if verdict == CHECK and holder is not None:
                # ask Kling about the holder's key; if it cannot be asked, raise (never pay twice)
                known = await self.find(entry.endpoint, holder.idempotency_key, strict=True)
                if known is not None:
                    await self.settler.adopt(entry, holder, known)
                    entry = replace(entry, task_id=known.task_id)
                    continue
                verdict = GONE
            if verdict == GONE:
                await self.ledger.cache_forget(entry)
                return None
            await anyio.sleep(policy.wait_poll)
            current = await self.ledger.cache_lookup(entry.fingerprint)
            if current is None:
                return None
            entry = current
