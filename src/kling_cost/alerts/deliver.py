"""Delivery, separate from spending: pending alerts go out with retries and backoff.

A :class:`Deliverer` reads the ledger's outbox, never the other way round: a slow or failing
sink delays nobody's reservation. Each pass (:meth:`Deliverer.deliver_pending`) clears the
alerts of windows that have ended, claims the due rows (a short transaction; safe with many
deliverers on SQLite or PostgreSQL), sends each to every sink that has not accepted it yet,
and records the outcome: ``delivered`` once every sink accepted, else the error, the attempt
count and the next attempt time (exponential backoff). All state is in the table, so a
restarted process carries on where the last one stopped; a deliverer that dies mid-send
leaves its rows due again when their lease ends (delivery is at least once).

Run it inline (:meth:`attach` with ``inline=True``: right after each transaction that wrote an
alert, in the caller's thread), in a background thread (:meth:`start`), or as
``kling-cost alerts deliver [--loop]``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..errors import ConfigurationError
from ..ledger import Ledger
from ..ledger.models import AlertRecord
from ..ledger.outbox_store import PHASE_ALERT, PHASE_RESOLVED, Consumer, OutboxStore
from .base import AlertSink
from .message import AlertMessage, build_message
from .redact import MAX_REASON, scrub_urls
from .sinks import SinkLike, make_sinks

__all__ = ["MAX_SECONDS", "Backoff", "Deliverer", "DeliveryReport", "check_seconds", "failure_text"]

log = logging.getLogger("kling_cost.alerts")

MAX_SECONDS = 365 * 86_400.0
"""Longest interval, lease, timeout or retry delay a setting may give (a year), in seconds."""


def check_seconds(value: object, what: str, *, zero: bool = False) -> float:
    """``value`` as a finite number of seconds, positive (or ``>= 0`` with ``zero``) and at
    most :data:`MAX_SECONDS`; NaN or an infinity would make a loop spin or a delay overflow."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds, not {value!r}")
    seconds = float(value)
    low_ok = seconds >= 0 if zero else seconds > 0
    if not (math.isfinite(seconds) and low_ok and seconds <= MAX_SECONDS):
        bound = ">= 0" if zero else "positive"
        raise ConfigurationError(
            f"{what} must be {bound} and at most {MAX_SECONDS:.0f} seconds, not {value!r}"
        )
    return seconds


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after ``n`` failed ones: ``base * factor ** (n - 1)``,
    at most ``maximum``. ``Backoff.none()`` retries at the next pass (tests)."""

    base: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    maximum: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        factor_ok = isinstance(self.factor, (int, float)) and math.isfinite(self.factor) and self.factor >= 1
        if self.base < timedelta(0) or self.maximum < timedelta(0) or not factor_ok:
            raise ConfigurationError("backoff needs base >= 0, maximum >= 0 and a finite factor >= 1")

    @classmethod
    def none(cls) -> Backoff:
        return cls(timedelta(0), 1.0, timedelta(0))

    def delay(self, failures: int) -> timedelta:
        if failures <= 0 or not self.base:
            return timedelta(0)
        exponent = min(failures - 1, 64)
        seconds = self.base.total_seconds() * self.factor**exponent
        return min(self.maximum, timedelta(seconds=min(seconds, self.maximum.total_seconds())))


@dataclass
class DeliveryReport:
    """What one pass did."""

    claimed: int = 0
    delivered: int = 0
    resolved: int = 0
    failed: int = 0
    cleared: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.resolved += other.resolved
        self.failed += other.failed
        self.cleared += other.cleared
        self.errors.extend(other.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "delivered": self.delivered,
            "resolved": self.resolved,
            "failed": self.failed,
            "cleared": self.cleared,
            "errors": list(self.errors),
        }


def failure_text(sink: AlertSink, exc: BaseException) -> str:
    """``<sink name>: <short reason>``, without the sink's secrets (it is stored and shown)."""
    text = " ".join((str(exc) or type(exc).__name__).split())
    if text.startswith(sink.name):
        text = text[len(sink.name) :].lstrip(": ")
    return f"{sink.name}: {sink.redact(text)[:MAX_REASON]}"


class Deliverer:
    """Sends a ledger's pending alerts to ``sinks`` (URLs, :class:`AlertSink` objects or
    callables; default ``log://``).

    ``dashboard_url`` is put in every message (``{scope}``, ``{window}``, ``{window_key}``,
    ``{alert_id}`` are filled in); ``backoff`` spaces retries; ``lease`` is how long a claimed
    row stays reserved for this deliverer while it sends; ``top`` is how many top consumers a
    message lists. ``clock`` defaults to the ledger's.
    """

    def __init__(
        self,
        ledger: Ledger,
        sinks: Iterable[SinkLike] | SinkLike | None = None,
        *,
        dashboard_url: str | None = None,
        backoff: Backoff | None = None,
        lease: timedelta = timedelta(minutes=2),
        batch_size: int = 100,
        top: int = 5,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if lease <= timedelta(0) or batch_size < 1 or top < 0:
            raise ConfigurationError("lease must be positive, batch_size >= 1 and top >= 0")
        self.ledger = ledger
        self.sinks = make_sinks(sinks)
        self.dashboard_url = dashboard_url
        self.backoff = backoff or Backoff()
        self.lease = lease
        self.batch_size = batch_size
        self.top = top
        self.clock = clock or ledger.clock
        self.store: OutboxStore = ledger.outbox
        self._pass_lock = threading.Lock()
        self._inline = False
        self._attached = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    # -- one pass ------------------------------------------------------------------------------

    def deliver_pending(self) -> DeliveryReport:
        """Clear ended windows, then send every due alert once; returns what happened."""
        report = DeliveryReport()
        with self._pass_lock:
            report.cleared = self.store.clear_ended(self.clock())
            for _ in range(10):  # bounded: rows retried at once (no backoff) wait for the next pass
                token, rows = self.store.claim(self.clock(), self.lease, self.batch_size)
                report.claimed += len(rows)
                for alert in rows:
                    self._deliver_one(alert, token, report)
                if len(rows) < self.batch_size:
                    break
        return report

    def _deliver_one(self, alert: AlertRecord, token: str, report: DeliveryReport) -> None:
        sent = set(alert.sent_to)
        delivered = alert.status == "delivered"
        errors: list[str] = []
        consumers: tuple[Consumer, ...] | None = None
        if not delivered:
            consumers = self._consumers(alert)
            message = build_message(
                alert, PHASE_ALERT, consumers=consumers, dashboard_url=self.dashboard_url, now=self.clock()
            )
            errors = self._send(message, PHASE_ALERT, self.sinks, sent)
            delivered = not errors
            if delivered:
                report.delivered += 1
        resolved: str | None = None
        if delivered and alert.cleared_at is not None and alert.resolved_status == "pending":
            targets = [s for s in self.sinks if s.sends_resolved]
            if not targets:
                resolved = "skipped"
            else:
                budget = self.store.budget(alert.budget_id)
                message = build_message(
                    alert,
                    PHASE_RESOLVED,
                    consumers=consumers if consumers is not None else self._consumers(alert),
                    dashboard_url=self.dashboard_url,
                    budget=budget,
                    now=self.clock(),
                )
                errors = self._send(message, PHASE_RESOLVED, targets, sent)
                if not errors:
                    resolved = "delivered"
                    report.resolved += 1
        error = "; ".join(errors) if errors else None
        if error is not None:
            report.failed += 1
            report.errors.append(f"alert {alert.id}: {error}")
        now = self.clock()
        kept = self.store.finish(
            alert,
            token,
            now,
            sent_to=sorted(sent),
            delivered=delivered,
            resolved=resolved,
            error=error,
            retry_at=now + self.backoff.delay(alert.attempts),
        )
        if not kept:
            log.info("alert %s changed while it was being delivered; it will be picked up again", alert.id)

    def _send(self, message: AlertMessage, phase: str, sinks: list[AlertSink], sent: set[str]) -> list[str]:
        errors = []
        for sink in sinks:
            key = f"{phase}:{sink.name}"
            if key in sent:
                continue
            try:
                sink.send(message)
            except Exception as exc:  # any failure of any sink: record it and retry later
                errors.append(failure_text(sink, exc))
                continue
            sent.add(key)
        return errors

    def _consumers(self, alert: AlertRecord) -> tuple[Consumer, ...]:
        if not self.top:
            return ()
        start = alert.details.get("window_start")
        end = alert.details.get("window_end")
        return tuple(
            self.store.top_consumers(
                alert.scope,
                None if start is None else datetime.fromisoformat(start),
                None if end is None else datetime.fromisoformat(end),
                self.top,
                unit=alert.unit,
            )
        )

    # -- inline and background -----------------------------------------------------------

    def attach(self, *, inline: bool = False) -> Deliverer:
        """Be told when a transaction of this ledger object wrote or cleared an alert: wake the
        background thread, or (``inline=True``) deliver at once in the committing thread, after
        its transaction; errors are recorded, never raised into the ledger call (but the sinks'
        time is spent in it: prefer :meth:`start` in servers)."""
        self._inline = inline
        if not self._attached:
            self.ledger.outbox.listeners.append(self._on_commit)
            self._attached = True
        return self

    def detach(self) -> None:
        if self._attached:
            self.ledger.outbox.listeners.remove(self._on_commit)
            self._attached = False

    def _on_commit(self) -> None:
        if not self._inline or self._thread is not None:
            self._wake.set()
            return
        if getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            self.deliver_pending()
        except Exception:
            log.exception("inline alert delivery failed; the alerts stay pending")
        finally:
            self._local.busy = False

    def start(
        self, interval: float = 1.0, *, on_pass: Callable[[DeliveryReport], None] | None = None
    ) -> Deliverer:
        """Deliver in a background thread: every ``interval`` seconds, and at once after a
        transaction of this ledger object wrote an alert. Stop it with :meth:`stop`/:meth:`close`.

        Each pass's report goes to ``on_pass`` when given (a pass that failed as a whole is a
        report with one error); otherwise its errors are logged as warnings."""
        interval = check_seconds(interval, "interval")
        if self._thread is not None:
            return self
        self.attach(inline=self._inline)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(interval, on_pass), name="kling-cost-alerts", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, interval: float, on_pass: Callable[[DeliveryReport], None] | None) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                report = self.deliver_pending()
            except Exception as exc:
                if on_pass is None:
                    log.exception("alert delivery pass failed; retrying in %s s", interval)
                reason = scrub_urls(str(exc) or type(exc).__name__)
                report = DeliveryReport(errors=[f"delivery pass failed: {reason}"])
            else:
                if report.errors and on_pass is None:
                    log.warning("alert delivery: %s", "; ".join(report.errors))
            if on_pass is not None:
                try:
                    on_pass(report)
                except Exception:
                    log.exception("the on_pass callback of an alert deliverer failed")
            self._wake.wait(interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (it finishes the message it is sending)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop, detach from the ledger and close the sinks (not the ledger)."""
        self.stop()
        self.detach()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)

    def __enter__(self) -> Deliverer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
