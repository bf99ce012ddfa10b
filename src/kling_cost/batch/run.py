"""Running a batch through the guarded client: bounded, resumable, stops at the ceiling."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import (
    BudgetExceeded,
    ConcurrencyLimited,
    KlingAPIError,
    KlingCostError,
    RateLimited,
    UnitMismatch,
)
from ..guard import CostAwareClient
from ..kling.models import KlingTask
from ..money import format_amount, money_context
from .rows import BatchRow

__all__ = ["BatchResult", "BatchRunner", "BatchSummary"]

DONE = "done"
FAILED = "failed"
CACHED = "cached"
REFUSED = "refused"
SKIPPED = "skipped"
ERROR = "error"
EARLIER = "done-earlier"


@dataclass(frozen=True)
class BatchResult:
    """What happened to one row."""

    line: int
    key: str
    status: str
    task_id: str | None = None
    estimate: Decimal | None = None
    charged: Decimal = Decimal(0)
    saved: Decimal = Decimal(0)
    urls: tuple[str, ...] = ()
    error: str | None = None
    unit: str | None = None
    """What ``estimate``, ``charged`` and ``saved`` count (the reservation's unit)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "key": self.key,
            "status": self.status,
            "task_id": self.task_id,
            "unit": self.unit,
            "estimate": None if self.estimate is None else format_amount(self.estimate),
            "charged": format_amount(self.charged),
            "saved": format_amount(self.saved),
            "urls": list(self.urls),
            "error": self.error,
        }


@dataclass
class BatchSummary:
    """Counts and money of one run (rows settled by an earlier run count as ``earlier``).

    Amounts are summed per unit and never across units: a re-run may resume rows reserved
    in credits and send new ones in units. ``spent``/``saved`` are the totals when every
    amount counts one ``unit`` (``None`` when the run mixed units: read ``*_by_unit``)."""

    results: list[BatchResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def _by_unit(self, amount: Callable[[BatchResult], Decimal]) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        with money_context():
            for r in self.results:
                if r.status != EARLIER and r.unit is not None:
                    out[r.unit] = out.get(r.unit, Decimal(0)) + amount(r)
        return dict(sorted(out.items()))

    @property
    def spent_by_unit(self) -> dict[str, Decimal]:
        """What this run charged, per unit."""
        return self._by_unit(lambda r: r.charged)

    @property
    def saved_by_unit(self) -> dict[str, Decimal]:
        """What this run saved (dedup cache), per unit."""
        return self._by_unit(lambda r: r.saved)

    @property
    def unit(self) -> str | None:
        """The one unit of this run's amounts; ``None`` when it had none or mixed units."""
        units = {r.unit for r in self.results if r.status != EARLIER and r.unit is not None}
        return units.pop() if len(units) == 1 else None

    def _single(self, by_unit: dict[str, Decimal]) -> Decimal | None:
        if len(by_unit) > 1:
            return None
        return next(iter(by_unit.values()), Decimal(0))

    @property
    def spent(self) -> Decimal | None:
        return self._single(self.spent_by_unit)

    @property
    def saved(self) -> Decimal | None:
        return self._single(self.saved_by_unit)

    def to_dict(self) -> dict[str, Any]:
        spent, saved = self.spent, self.saved
        return {
            "rows": len(self.results),
            "done": self.count(DONE),
            "failed": self.count(FAILED),
            "refunded": self.count(FAILED),
            "cached": self.count(CACHED),
            "refused": self.count(REFUSED),
            "skipped": self.count(SKIPPED),
            "errors": self.count(ERROR),
            "earlier": self.count(EARLIER),
            "unit": self.unit,
            "spent": None if spent is None else format_amount(spent),
            "saved": None if saved is None else format_amount(saved),
            "spent_by_unit": {u: format_amount(v) for u, v in self.spent_by_unit.items()},
            "saved_by_unit": {u: format_amount(v) for u, v in self.saved_by_unit.items()},
        }


class BatchRunner:
    """Submit rows with at most ``concurrency`` tasks running (a task holds one of Kling's
    pack slots from submit to end), back off on 1302/1303, stop submitting when a budget
    refuses, wait for every submitted task and settle it. Re-running the same rows skips
    those already settled and resumes those still running.
    """

    def __init__(
        self,
        guard: CostAwareClient,
        rows: Sequence[BatchRow],
        *,
        concurrency: int = 5,
        poll: float = 2.0,
        timeout: float = 1800.0,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        results_path: str | Path | None = None,
        on_result: Callable[[BatchResult], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.guard = guard
        self.rows = list(rows)
        self.concurrency = concurrency
        self.poll = poll
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.results_path = None if results_path is None else Path(results_path)
        self.on_result = on_result
        self.stopped = threading.Event()
        self.stop_reason: str | None = None
        self._lock = threading.Lock()

    def run(self) -> BatchSummary:
        summary = BatchSummary()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="kling-batch") as pool:
            for result in pool.map(self._one, self.rows):
                summary.results.append(result)
        return summary

    def _record(self, result: BatchResult) -> BatchResult:
        with self._lock:
            if self.results_path is not None:
                with self.results_path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(result.to_dict()) + "\n")
            if self.on_result is not None:
                self.on_result(result)
        return result

    def _one(self, row: BatchRow) -> BatchResult:
        ledger = self.guard.ledger
        earlier = ledger.get_reservation(row.key)
        if (earlier is not None and earlier.status in ("committed", "cached")) or (
            earlier is not None and earlier.status == "released" and earlier.task_id
        ):
            return self._record(
                BatchResult(
                    row.line,
                    row.key,
                    EARLIER,
                    earlier.task_id,
                    earlier.amount,
                    earlier.actual or Decimal(0),
                    unit=earlier.unit,
                )
            )
        if earlier is not None and earlier.status in ("reserved", "expired") and earlier.task_id:
            # Sent by an earlier run, held or lapsed while it ran: resume that task (never
            # create it again, whatever this run's catalog says; it settles in the unit it
            # recorded, a lapsed one as a charge Kling made anyway).
            try:
                task = self.guard.get_task(row.endpoint, earlier.task_id)
            except KlingCostError as exc:
                return self._record(BatchResult(row.line, row.key, ERROR, earlier.task_id, error=str(exc)))
            return self._record(self._finish(row, task))
        if self.stopped.is_set() and earlier is None:
            return self._record(BatchResult(row.line, row.key, SKIPPED, error=self.stop_reason))
        delay = self.backoff
        while True:
            try:
                task = self.guard.create(row.endpoint, row.body)
                break
            except (BudgetExceeded, UnitMismatch) as exc:
                # a full budget, or one counting another unit: no later row can pass either
                self.stop_reason = str(exc)
                self.stopped.set()
                return self._record(BatchResult(row.line, row.key, REFUSED, error=str(exc)))
            except (ConcurrencyLimited, RateLimited):
                time.sleep(delay)  # Kling's pack is full or we are too fast: wait, same key
                delay = min(self.max_backoff, delay * 2)
            except KlingCostError as exc:
                return self._record(BatchResult(row.line, row.key, ERROR, error=str(exc)))
        return self._record(self._finish(row, task))

    def _finish(self, row: BatchRow, task: KlingTask) -> BatchResult:
        ledger = self.guard.ledger
        try:
            done = task if task.done else self.guard.wait(task, poll=self.poll, timeout=self.timeout)
        except KlingAPIError as exc:
            return BatchResult(row.line, row.key, ERROR, task.task_id, error=str(exc))
        except KlingCostError as exc:  # TaskTimeout: still running; `kling-cost settle` later
            return BatchResult(row.line, row.key, ERROR, task.task_id, error=str(exc))
        res = ledger.get_reservation(row.key)
        unit = None if res is None else res.unit
        urls = tuple(v.url for v in done.videos if v.url) + tuple(i.url for i in done.images if i.url)
        if res is not None and res.status == "cached":
            return BatchResult(
                row.line, row.key, CACHED, done.task_id, res.amount, saved=res.amount, urls=urls, unit=unit
            )
        if done.failed:
            return BatchResult(
                row.line,
                row.key,
                FAILED,
                done.task_id,
                None if res is None else res.amount,
                error=done.task_status_msg,
                unit=unit,
            )
        charged = Decimal(0) if res is None or res.actual is None else res.actual
        return BatchResult(
            row.line,
            row.key,
            DONE,
            done.task_id,
            None if res is None else res.amount,
            charged,
            urls=urls,
            unit=unit,
        )
