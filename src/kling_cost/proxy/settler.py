"""The proxy's background settler: every open proxy task, asked about until it is settled.

Settlement happens once, whichever comes first: Kling's callback, a client's query that shows
the task ended, or this loop. It also finishes what a killed proxy left: a create Kling
accepted but whose task id never reached the ledger is found by the external id the proxy
injected, attached and charged once; a hold whose request never reached Kling is released
after the guard's grace period.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio

from ..errors import KlingCostError
from ..guard import SettleReport
from ..ledger.proxy_store import OwnedTask
from .service import ProxyService, dump_task

__all__ = ["ProxySettler"]

log = logging.getLogger("kling_cost.proxy")


@dataclass
class ProxySettler:
    service: ProxyService
    errors: list[str] = field(default_factory=list)

    async def settle_once(self) -> SettleReport:
        """One pass over the open proxy tasks."""
        service = self.service
        report = SettleReport()
        rows: list[OwnedTask] = await anyio.to_thread.run_sync(service.ledger.proxy.open_tasks)
        for owned in rows:
            try:
                await self._settle(owned, report)
            except KlingCostError as exc:
                report.errors.append(f"{owned.external_task_id}: {exc}")
        if report.errors:
            log.warning(
                "settler: %d tasks could not be settled now: %s", len(report.errors), report.errors[:3]
            )
        return report

    async def _settle(self, owned: OwnedTask, report: SettleReport) -> None:
        service = self.service
        ledger = service.ledger
        res = await anyio.to_thread.run_sync(ledger.get_reservation, owned.external_task_id)
        if res is None:
            return
        key = await anyio.to_thread.run_sync(ledger.proxy.key_by_id, owned.key_id)
        guard = service.guards[key.unit if key is not None else "units"]
        if res.task_id is None:
            task = await guard.flight.find(owned.endpoint, owned.external_task_id, strict=True)
        else:
            task = await guard.client.get_task(owned.endpoint, res.task_id)
        await guard.settler.settle_found(res, task, ledger.clock(), report)
        if task is not None and (task.done or owned.task_id is None):
            await service.seen(None, owned.endpoint, dump_task(task))

    async def run(self, interval: float) -> None:
        """Settle every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.settle_once()
            except KlingCostError as exc:  # the ledger is down: try again next time
                log.error("settler: %s", exc)
            await anyio.sleep(interval)
