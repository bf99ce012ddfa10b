"""The guard's steps in the ledger: settling an ended task, keeping a running task's hold,
single-flight bookkeeping, and what ``settle_pending`` finishes.

One source for both guards: ``async_settle.py`` is written by hand and ``settle.py`` is
generated from it by ``python scripts/unasync.py``. The async settler awaits the ledger through
:class:`~kling_cost.guard.ledger_view.AsyncLedgerView` (each call in a worker thread); the
sync one calls the ledger itself. The decisions without I/O are :class:`GuardCore`'s.
"""

from __future__ import annotations

from datetime import datetime

from ..kling.tasks import AnyTask
from ..ledger import CacheEntry, Ledger, Reservation
from ._core import PENDING_GRACE, GuardCore, GuardedRequest, SettleReport, sent_by_key
from .ledger_view import AsyncLedgerView

__all__ = ["AsyncSettler"]


class AsyncSettler:
    """The ledger side of one guarded client (its :class:`GuardCore` decides, this records)."""

    def __init__(self, ledger: Ledger, core: GuardCore) -> None:
        self.ledger = AsyncLedgerView(ledger)
        self.cleanup = AsyncLedgerView(ledger, shielded=True)
        """The ledger for clean-up after a failure: reached even from a cancelled task."""
        self.core = core

    # -- single-flight: waiting for an identical request in flight ----------------------------

    async def give_up(self, req: GuardedRequest) -> None:
        """The caller that claimed ``req``'s fingerprint failed: forget the claim when its hold
        was freed, else mark it abandoned (Kling may have it) so waiters ask Kling at once."""
        found = await self.cleanup.get_reservation(req.key)
        if found is not None and found.status == "reserved":
            await self.cleanup.cache_abandon(req.fingerprint, found.id)
        else:
            await self.cleanup.cache_drop(req.fingerprint)

    async def holder(self, entry: CacheEntry) -> Reservation | None:
        """The reservation paying for an in-flight fingerprint (None before it reserved)."""
        if entry.reservation_id is None:
            return None
        return await self.ledger.get_reservation(entry.reservation_id)

    async def adopt(self, entry: CacheEntry, holder: Reservation, task: AnyTask) -> None:
        """Kling accepted the request of a holder that gave up: attach the task to the holder's
        reservation (it is settled when the task ends) and let every waiter wait for it."""
        if holder.task_id is None:
            await self.ledger.attach_task(holder, task.task_id, ttl=self.core.task_ttl)
        await self.ledger.cache_adopt(entry, task.task_id)

    # -- after the task ended -----------------------------------------------------------------

    async def settle(self, reservation: Reservation, task: AnyTask) -> Reservation:
        """Commit what Kling charged for a succeeded task; release a failed one (free) unless
        Kling billed it anyway (actuals win)."""
        if not task.done:
            return reservation
        fp = reservation.metadata.get("fingerprint")
        if task.failed and not self.core.charged(task):
            settled = await self.ledger.release(reservation, failed=True)
            if isinstance(fp, str):
                await self.ledger.cache_drop(fp, task_id=task.task_id)
            return settled
        actual, source = self.core.actual(task, reservation)
        extra = self.core.result_metadata(task, source)
        # Kling confirmed the charge: record it even if the lease lapsed meanwhile (actuals win)
        settled = await self.ledger.commit(
            reservation,
            actual,
            task_id=task.task_id,
            force=True,
            metadata=extra,
        )
        if isinstance(fp, str) and self.core.cache.enabled and task.succeeded:
            await self.ledger.cache_complete(fp, task.model_dump(mode="json"), self.core.cache.ttl)
        elif isinstance(fp, str) and not task.succeeded:  # billed, yet failed: nothing to reuse
            await self.ledger.cache_drop(fp, task_id=task.task_id)
        return settled

    async def settle_task(self, reservation: Reservation | None, task: AnyTask) -> None:
        """Settle an ended task's reservation, whatever state the ledger left it in."""
        if reservation is None or not task.done:
            return
        if reservation.status in ("reserved", "expired"):
            await self.settle(reservation, task)
        elif (
            reservation.status == "released"
            and (task.succeeded or self.core.charged(task))
            and reservation.task_id in (None, task.task_id)
        ):
            # the hold was freed, yet Kling accepted and charged it: record the charge anyway
            actual, source = self.core.actual(task, reservation)
            await self.ledger.charge(
                actual,
                reservation.scopes,
                idempotency_key=f"{reservation.idempotency_key}:late",
                task_id=task.task_id,
                metadata={**reservation.metadata, **self.core.result_metadata(task, source), "late": True},
                unit=reservation.unit,
                catalog=reservation.catalog,
                catalog_date=reservation.catalog_date,
            )

    async def reservation_for(self, task: AnyTask) -> Reservation | None:
        """The reservation that paid for ``task``: by its ``external_task_id``, else its id."""
        ref = task.external_task_id
        found = await self.ledger.get_reservation(ref) if ref else None
        if found is None:
            found = await self.ledger.reservation_for_task(task.task_id)
        return found

    async def settle_by_task(self, task: AnyTask) -> None:
        """Settle ``task``'s reservation once the task has ended (nothing while it runs)."""
        if task.done:
            await self.settle_task(await self.reservation_for(task), task)

    async def renew(self, task: AnyTask | None) -> None:
        """Keep a running task's reservation held while someone waits for it."""
        found = None if task is None else await self.reservation_for(task)
        if found is not None and found.status == "reserved":
            await self.ledger.extend(found, self.core.task_ttl)

    # -- settle_pending -----------------------------------------------------------------------

    async def unsettled(self, since: datetime) -> list[Reservation]:
        """Reservations whose outcome is not in the ledger yet: held ones, and expired ones
        (made after ``since``) whose task may still have been accepted and charged."""
        held = await self.ledger.reservations(status="reserved", limit=None)
        return held + await self.ledger.reservations(status="expired", limit=None, since=since)

    async def settle_found(
        self, res: Reservation, task: AnyTask | None, now: datetime, report: SettleReport
    ) -> None:
        """One step of ``settle_pending`` once Kling was asked about ``res``."""
        if task is None:  # Kling has no task under this key: it was never accepted
            if res.status == "reserved" and res.created_at < now - PENDING_GRACE and sent_by_key(res):
                await self.ledger.release(res)
                report.released.append(res.id)
            elif res.status == "reserved":
                report.running.append(res.id)
            return
        if res.task_id is None:
            res = await self.ledger.attach_task(res, task.task_id, ttl=self.core.task_ttl)
        if not task.done:
            if res.status == "reserved":
                await self.ledger.extend(res, self.core.task_ttl)
            else:
                report.abandoned.append(res.id)  # expired before it could be attached
            report.running.append(res.id)
            return
        settled = await self.settle(res, task)
        (report.committed if settled.status == "committed" else report.released).append(res.id)
