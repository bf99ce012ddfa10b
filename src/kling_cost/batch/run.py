"""Running a batch through the guarded client: bounded, resumable, fills the budget, stops
when nothing more fits, and can be interrupted without losing or double-charging anything."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import (
    BudgetExceeded,
    ConcurrencyLimited,
    KlingCostError,
    RateLimited,
    UnitMismatch,
    ValidationError,
)
from ..guard import CostAwareClient
from ..kling.tasks import AnyTask
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
RUNNING = "running"
"""Left running at Kling by an abandoned run: its hold stays (leased) until settled."""

INTERRUPTED = "interrupted before it was sent"
LEFT_RUNNING = "left running at Kling; `kling-cost settle` (or running the batch again) settles it"

#: How long an abandoned run waits for its workers to reach a safe point before returning.
ABANDON_GRACE = 5.0


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
            "running": self.count(RUNNING),
            "unit": self.unit,
            "spent": None if spent is None else format_amount(spent),
            "saved": None if saved is None else format_amount(saved),
            "spent_by_unit": {u: format_amount(v) for u, v in self.spent_by_unit.items()},
            "saved_by_unit": {u: format_amount(v) for u, v in self.saved_by_unit.items()},
        }


class BatchRunner:
    """Submit rows with at most ``concurrency`` tasks running (a task holds one of Kling's
    pack slots from submit to end), back off on 1302/1303, wait for every submitted task and
    settle it. Re-running the same rows skips those already settled and resumes those still
    running.

    A row a budget refuses while other tasks are still running waits for them: each
    settlement (a failed task's refund, a commit below the estimate) may free room, and the
    row is tried again; no later row is sent meanwhile. The run stops submitting when a row is
    refused with nothing left running (nothing more can fit), or at once when no settlement
    can help (a budget of another unit, a per-request maximum, a row above the whole limit).

    :meth:`interrupt` (safe to call from a signal handler) stops it in two steps: the first
    call stops submitting and lets the running tasks settle (rows not sent are ``skipped``);
    the second stops waiting (rows still running are ``running``: their holds stay, leased,
    until ``kling-cost settle`` or a re-run settles them). ``on_stopping(level, in_flight)``
    is called from :meth:`run`'s thread when a step is taken; ``on_submitted(row, task)`` from
    a worker when Kling accepted a row's task.
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
        max_poll: float = 30.0,
        results_path: str | Path | None = None,
        on_result: Callable[[BatchResult], None] | None = None,
        on_submitted: Callable[[BatchRow, AnyTask], None] | None = None,
        on_stopping: Callable[[int, int], None] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be a whole number of at least 1, not {concurrency!r}")
        self.guard = guard
        self.rows = list(rows)
        self.concurrency = concurrency
        self.poll = poll
        self.max_poll = max(poll, max_poll)
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.results_path = None if results_path is None else Path(results_path)
        self.on_result = on_result
        self.on_submitted = on_submitted
        self.on_stopping = on_stopping
        self.stopped = threading.Event()
        """Set when a budget refused a row with nothing left running (``stop_reason`` says why)."""
        self.stop_reason: str | None = None
        self.interrupted = 0
        """0, 1 (stopped submitting, running tasks settled) or 2 (left running)."""
        self._requested = 0  # written by interrupt() (a signal handler): a plain int, no locks
        self._lock = threading.Lock()
        self._state = threading.Condition()
        self._in_flight = 0  # rows handed to a worker, not ended, not waiting for room
        self._waiting = 0  # rows refused by a budget, waiting for a settlement to try again
        self._settlements = 0  # bumped each time a handed-out row ends
        self._stopping = threading.Event()
        self._halt = threading.Event()
        self._results: list[BatchResult | None] = []
        self._closed = False

    # -- control --------------------------------------------------------------------------------

    def interrupt(self) -> int:
        """First call: stop submitting, settle what runs. Second: stop waiting. Returns how
        many times it was called. Only assigns an int, so a signal handler may call it while
        any lock is held (run() notices it within 0.1 s)."""
        self._requested += 1
        return self._requested

    @property
    def interrupt_requests(self) -> int:
        """How many times :meth:`interrupt` was called (during the run or after it)."""
        return self._requested

    @property
    def in_flight(self) -> int:
        """Rows sent (or being sent) whose task has not ended yet."""
        return self._in_flight

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> BatchSummary:
        ledger = self.guard.ledger
        self._results = [None] * len(self.rows)
        # ``concurrency`` long-lived workers (each keeps its ledger connection), fed one row at
        # a time when a slot is free; daemons, so a worker stuck in a call never keeps an
        # abandoned run's process alive (its row is a crash the ledger's leases cover).
        jobs: queue.SimpleQueue[tuple[int, BatchRow, str | None] | None] = queue.SimpleQueue()
        workers = [
            threading.Thread(target=self._worker, args=(jobs,), name="kling-batch", daemon=True)
            for _ in range(min(self.concurrency, len(self.rows)))
        ]
        for worker in workers:
            worker.start()
        for index, row in enumerate(self.rows):
            self._notice_interrupts()
            earlier = ledger.get_reservation(row.key)
            if (earlier is not None and earlier.status in ("committed", "cached")) or (
                earlier is not None and earlier.status == "released" and earlier.task_id
            ):
                self._record(
                    index,
                    BatchResult(
                        row.line,
                        row.key,
                        EARLIER,
                        earlier.task_id,
                        earlier.amount,
                        earlier.actual or Decimal(0),
                        unit=earlier.unit,
                    ),
                )
                continue
            resume = (
                earlier.task_id
                if earlier is not None and earlier.status in ("reserved", "expired") and earlier.task_id
                else None
            )
            if not self._wait_for_slot(resume is not None):
                reason = INTERRUPTED if self._stopping.is_set() else self.stop_reason
                self._record(index, BatchResult(row.line, row.key, SKIPPED, error=reason))
                continue
            jobs.put((index, row, resume))
        self._wait_for_workers()
        for _ in workers:
            jobs.put(None)
        with self._lock:
            self._closed = True  # a worker still out (abandoned) records nothing any more
            for index, row in enumerate(self.rows):
                if self._results[index] is None:
                    left = self._left_running(row)
                    self._write(left)
                    self._results[index] = left
        return BatchSummary([r for r in self._results if r is not None])

    def _notice_interrupts(self) -> None:
        """Turn interrupt() calls into events (in run()'s thread), and tell on_stopping."""
        level = min(self._requested, 2)
        while self.interrupted < level:
            self.interrupted += 1
            with self._state:
                (self._stopping if self.interrupted == 1 else self._halt).set()
                in_flight = self._in_flight
                self._state.notify_all()
            if self.on_stopping is not None:
                self.on_stopping(self.interrupted, in_flight)

    def _wait_for_slot(self, resume: bool) -> bool:
        """Wait until a worker may take the next row: False when it must be skipped instead
        (interrupted; or a budget has no room left, unless the row's task already runs)."""
        while True:
            self._notice_interrupts()
            with self._state:
                if self._stopping.is_set() or (self.stopped.is_set() and not resume):
                    return False
                if not self._waiting and self._in_flight < self.concurrency:
                    self._in_flight += 1
                    return True
                self._state.wait(0.1)

    def _wait_for_workers(self) -> None:
        halted_at: float | None = None
        while True:
            self._notice_interrupts()
            with self._state:
                if self._in_flight == 0 and self._waiting == 0:
                    return
                self._state.wait(0.1)
            if self._halt.is_set():
                halted_at = halted_at or time.monotonic()
                if time.monotonic() - halted_at > ABANDON_GRACE:
                    return  # a worker stuck in a call: its row is reported as running

    def _left_running(self, row: BatchRow) -> BatchResult:
        res = self.guard.ledger.get_reservation(row.key)
        task_id = None if res is None else res.task_id
        unit = None if res is None else res.unit
        return BatchResult(
            row.line,
            row.key,
            RUNNING,
            task_id,
            None if res is None else res.amount,
            error=LEFT_RUNNING,
            unit=unit,
        )

    # -- workers --------------------------------------------------------------------------------

    def _worker(self, jobs: queue.SimpleQueue[tuple[int, BatchRow, str | None] | None]) -> None:
        while (job := jobs.get()) is not None:
            self._work(*job)

    def _work(self, index: int, row: BatchRow, resume: str | None) -> None:
        try:
            result = self._one(row, resume)
        except Exception as exc:  # never lose a row: whatever went wrong is its result
            result = BatchResult(row.line, row.key, ERROR, error=str(exc) or type(exc).__name__)
        self._record(index, result)
        with self._state:
            self._in_flight -= 1
            self._settlements += 1
            self._state.notify_all()

    def _record(self, index: int, result: BatchResult) -> None:
        with self._lock:
            if self._closed:
                return
            self._results[index] = result
            self._write(result)
            if self.on_result is not None:
                self.on_result(result)

    def _write(self, result: BatchResult) -> None:
        if self.results_path is not None:
            with self.results_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(result.to_dict()) + "\n")

    def _one(self, row: BatchRow, resume: str | None) -> BatchResult:
        if resume is not None:
            # Sent by an earlier run, held or lapsed while it ran: resume that task (never
            # create it again, whatever this run's catalog says; it settles in the unit it
            # recorded, a lapsed one as a charge Kling made anyway).
            try:
                task = self.guard.get_task(row.endpoint, resume)
            except KlingCostError as exc:
                return BatchResult(row.line, row.key, ERROR, resume, error=str(exc))
            return self._finish(row, task)
        delay = self.backoff
        while True:
            if self._stopping.is_set():
                return BatchResult(row.line, row.key, SKIPPED, error=INTERRUPTED)
            with self._state:
                seen = self._settlements
            try:
                task = self.guard.create(row.endpoint, row.body)
                break
            except UnitMismatch as exc:  # a budget counting another unit: no row can pass
                return self._refused(row, str(exc))
            except BudgetExceeded as exc:
                hopeless = exc.reason != "limit" or (exc.limit is not None and exc.requested > exc.limit)
                if hopeless or not self._wait_for_room(seen):
                    if self._stopping.is_set():
                        return BatchResult(row.line, row.key, SKIPPED, error=INTERRUPTED)
                    return self._refused(row, str(exc))
            except (ConcurrencyLimited, RateLimited):
                # Kling's pack is full or we are too fast: wait, then the same key again
                if self._stopping.wait(delay):
                    return BatchResult(row.line, row.key, SKIPPED, error=INTERRUPTED)
                delay = min(self.max_backoff, delay * 2)
            except KlingCostError as exc:
                return BatchResult(row.line, row.key, ERROR, error=str(exc))
        if self.on_submitted is not None:
            self.on_submitted(row, task)
        return self._finish(row, task)

    def _refused(self, row: BatchRow, reason: str) -> BatchResult:
        with self._state:
            if self.stop_reason is None:
                self.stop_reason = reason
            self.stopped.set()
            self._state.notify_all()
        return BatchResult(row.line, row.key, REFUSED, error=reason)

    def _wait_for_room(self, seen: int) -> bool:
        """A budget refused this row: wait until a row sent earlier ends (it may free room),
        True to try again; False when nothing is left running (nothing more can fit) or the
        run is stopping."""
        with self._state:
            self._in_flight -= 1
            self._waiting += 1
            self._state.notify_all()
            try:
                while self._settlements == seen and self._in_flight > 0 and not self._stopping.is_set():
                    self._state.wait(0.1)
                return self._settlements != seen and not self._stopping.is_set()
            finally:
                self._waiting -= 1
                self._in_flight += 1

    def _finish(self, row: BatchRow, task: AnyTask) -> BatchResult:
        ledger = self.guard.ledger
        deadline = time.monotonic() + self.timeout
        interval = self.poll
        renewed = time.monotonic()
        renew_every = max(1.0, self.guard.core.task_ttl.total_seconds() / 2)
        try:
            while not task.done:
                if self._halt.wait(min(interval, max(0.0, deadline - time.monotonic()))):
                    return self._left_running(row)
                if time.monotonic() >= deadline:
                    return BatchResult(
                        row.line,
                        row.key,
                        ERROR,
                        task.task_id,
                        error=f"task {task.task_id} did not end within {self.timeout:g} s; "
                        "it may still finish: `kling-cost settle` settles it later",
                    )
                task = self.guard.get_task(row.endpoint, task.task_id)  # settles it once ended
                interval = min(self.max_poll, interval * 1.5)
                if time.monotonic() - renewed > renew_every:
                    self.guard.settler.renew(task)  # keep the hold leased while we wait
                    renewed = time.monotonic()
        except KlingCostError as exc:  # Kling's error, or the ledger's: settle it later
            return BatchResult(row.line, row.key, ERROR, task.task_id, error=str(exc))
        res = ledger.get_reservation(row.key)
        unit = None if res is None else res.unit
        urls = tuple(v.url for v in task.videos if v.url) + tuple(i.url for i in task.images if i.url)
        if res is not None and res.status == "cached":
            return BatchResult(
                row.line, row.key, CACHED, task.task_id, res.amount, saved=res.amount, urls=urls, unit=unit
            )
        if task.failed:
            return BatchResult(
                row.line,
                row.key,
                FAILED,
                task.task_id,
                None if res is None else res.amount,
                error=task.task_status_msg,
                unit=unit,
            )
        charged = Decimal(0) if res is None or res.actual is None else res.actual
        return BatchResult(
            row.line,
            row.key,
            DONE,
            task.task_id,
            None if res is None else res.amount,
            charged,
            urls=urls,
            unit=unit,
        )
