"""The proxy's ``/metrics``, in Prometheus' format, correct with any number of worker processes.

One exposition merges two sources:

* **What this process saw**, recorded by the app through :class:`ProxyMetrics`: requests and
  refusals (counters), spend (a counter), upstream and added latency (histograms).
* **What the ledger holds**, read when ``/metrics`` is scraped (:class:`LedgerCollector`): open
  reservations, and each budget's limit, used, reserved and remaining in its current window.
  Nothing of it is kept in a process, so no worker can report a stale figure, and every proxy
  process and machine on one ledger reports the same numbers (aggregate them with ``max``,
  never ``sum``).

Names follow Prometheus' conventions: counters end in ``_total``, durations are in seconds.
Money is the exception to "base units": Kling's ``units`` and the app's ``credits`` are counts
of their own with nothing to convert them to, so the unit is a label (``unit="units"``), and a
query that adds amounts selects one ``unit`` (the project never adds across units).

**Several workers** (``kling-cost proxy --workers N``). Each worker is its own process, so the
counters of one are not those of another; prometheus_client's multiprocess mode keeps each
process's values in memory-mapped files of one shared directory and sums them at scrape time
(histograms too, bucket by bucket). The mode is chosen when ``prometheus_client`` is imported,
by the environment variable ``PROMETHEUS_MULTIPROC_DIR``, so the parent must set it before it
starts the workers (they inherit it)::

    path = prepare_multiprocess_dir()   # in the parent: a fresh (or emptied) directory, exported
    uvicorn.run(..., workers=n)         # every worker imports prometheus_client with it set
    remove_multiprocess_dir(path)       # when the parent stops

:class:`ProxyMetrics` follows whatever mode ``prometheus_client`` chose in its process: with one
worker (no directory), a plain registry of its own. A worker that dies leaves its files behind
and its counts stay in the sums (a counter never goes down, which is what Prometheus expects of
a restarted worker); prometheus_client's ``mark_process_dead`` only matters for "live" gauges,
and this module has none: what could be a gauge is read from the ledger at scrape time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ..budgets import UNITS
from ..errors import ConfigurationError, KlingCostError, ValidationError
from ..ledger import Ledger
from ..money import from_storage

if TYPE_CHECKING:
    from datetime import datetime

    from ..ledger.backend import Cursor
    from ..ledger.hooks import Refusal, SettledCharge, WindowState
    from ..ledger.records import BudgetRow, ReservationRow

__all__ = [
    "ADDED_BUCKETS",
    "ENV_MULTIPROC_DIR",
    "REFUSAL_REASONS",
    "UPSTREAM_BUCKETS",
    "LedgerCollector",
    "ProxyMetrics",
    "prepare_multiprocess_dir",
    "remove_multiprocess_dir",
]

log = logging.getLogger(__name__)

ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus_client reads, at import, to choose its multiprocess mode."""

REFUSAL_REASONS = (
    "auth",
    "body_too_large",
    "budget",
    "callback_url",
    "concurrency",
    "invalid",
    "ledger_unavailable",
    "max_per_request",
    "model",
    "not_found",
    "proxy_error",
    "unknown_path",
    "unpriceable",
    "upstream",
)
"""Why a request was refused: the ``reason`` label of ``kling_cost_proxy_refusals_total``. All
but ``upstream`` (Kling itself refused) are the proxy's own refusals. A closed list, so that a
typo cannot open a new series; each starts at 0."""

ADDED_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds: the proxy's own latency is counted in milliseconds (the goals are 2, 5 and 15 ms)."""

UPSTREAM_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Seconds: Kling answers in tens to hundreds of milliseconds; a create carrying base64 images
can take seconds to upload."""

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
"""HTTP methods counted by name; any other becomes ``OTHER`` (a client chooses the method)."""

_ROUTE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_DB_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


# -- the multiprocess directory (for the parent) -----------------------------------------------


def prepare_multiprocess_dir(path: Path | str | None = None) -> Path:
    """Make the directory the workers share their values in, empty of any earlier run's, and
    export it as ``PROMETHEUS_MULTIPROC_DIR`` so that the workers started afterwards inherit it.

    Call it in the parent, before starting several workers. ``path``: that directory (created
    if missing); else the one ``PROMETHEUS_MULTIPROC_DIR`` already names (a deployment that
    manages its own); else a new private temporary directory. Only prometheus_client's own
    files (``counter_<pid>.db`` ...) are removed from it. The parent itself records nothing:
    a process that imported prometheus_client before the variable was set stays in
    single-process mode, which is right for a parent and wrong for a worker. uvicorn starts
    its workers with ``spawn`` (fresh interpreters), so they import it with the variable set
    even when the parent had imported this module first; a server that forks its workers
    must call this before the parent imports prometheus_client.
    """
    chosen = path if path is not None else os.environ.get(ENV_MULTIPROC_DIR)
    if chosen is None or chosen == "":
        where = Path(tempfile.mkdtemp(prefix="kling-cost-metrics-"))  # mode 0700
    else:
        where = Path(chosen)
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the metrics directory {where}: {exc}") from exc
    _remove_files(where)
    os.environ[ENV_MULTIPROC_DIR] = str(where)
    return where


def remove_multiprocess_dir(path: Path | str) -> None:
    """When the parent stops: remove prometheus_client's files from ``path``, then ``path``
    itself if nothing else is left in it, and unset ``PROMETHEUS_MULTIPROC_DIR`` if it names
    ``path``. A missing directory is not an error."""
    where = Path(path)
    if not where.exists():
        return
    _remove_files(where)
    with contextlib.suppress(OSError):  # something else lives there (a managed directory): keep it
        where.rmdir()
    if os.environ.get(ENV_MULTIPROC_DIR) == str(where):
        del os.environ[ENV_MULTIPROC_DIR]


def _remove_files(where: Path) -> None:
    if not where.is_dir():
        raise ConfigurationError(f"the metrics directory {where} is not a directory")
    try:
        for entry in where.iterdir():
            if _DB_FILE.fullmatch(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot clear the metrics directory {where}: {exc}") from exc


def _multiprocess_dir() -> str | None:
    """The directory this process records into, or None in single-process mode.

    The mode is what prometheus_client chose when it was imported here, not what the
    environment says now: the two disagree only when the variable changed afterwards."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    where = os.environ.get(ENV_MULTIPROC_DIR)
    if not where or not os.path.isdir(where):
        raise ConfigurationError(
            f"prometheus_client records to {ENV_MULTIPROC_DIR}, which no longer names a directory "
            f"({where!r}); set it before the process starts and keep it"
        )
    return where


# -- what this process saw ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Families:
    requests: Counter
    refusals: Counter
    spend: Counter
    upstream: Histogram
    added: Histogram


def _families(registry: CollectorRegistry | None) -> _Families:
    fams = _Families(
        requests=Counter(
            "kling_cost_proxy_requests",
            "Requests the proxy answered, by route template, method and HTTP status.",
            ("route", "method", "status"),
            registry=registry,
        ),
        refusals=Counter(
            "kling_cost_proxy_refusals",
            "Requests refused, by reason: the proxy's own refusals, or upstream when Kling refused.",
            ("reason",),
            registry=registry,
        ),
        spend=Counter(
            "kling_cost_proxy_spend",
            "Amounts settled through this proxy, in the unit of the label, counted once per scope "
            "charged (select one scope and one unit before adding); the ledger holds the exact figures.",
            ("scope", "model", "unit"),
            registry=registry,
        ),
        upstream=Histogram(
            "kling_cost_proxy_upstream_request_duration_seconds",
            "Time from sending a request upstream to its answer, by route template.",
            ("route",),
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        ),
        added=Histogram(
            "kling_cost_proxy_added_latency_seconds",
            "Time the proxy itself added to a request (its whole time minus the upstream's).",
            ("route",),
            buckets=ADDED_BUCKETS,
            registry=registry,
        ),
    )
    for reason in REFUSAL_REASONS:
        fams.refusals.labels(reason)  # every reason starts at 0, so rate() sees its first refusal
    return fams


_shared: _Families | None = None
_shared_lock = threading.Lock()


def _shared_families() -> _Families:
    """The one set of metrics of a process in multiprocess mode: two objects for one series
    would overwrite each other's value in the process's file."""
    global _shared  # noqa: PLW0603 - one set per process, by prometheus_client's design
    with _shared_lock:
        if _shared is None:
            _shared = _families(None)
        return _shared


class ProxyMetrics:
    """The proxy's metrics in one process: what the app records, and :meth:`render` for
    ``/metrics``. Recording is a few microseconds (no I/O but a memory-mapped write).

    In multiprocess mode (see the module) every instance of a process shares one set of
    metrics and :meth:`render` sums every worker's; otherwise each instance has a registry of
    its own (with the process's CPU and memory, which mean nothing summed over workers).

    The labels stay few: ``route`` is a template the app names (``create``, ``query``,
    ``list``, ``account_costs``, ``callback`` ...), never a raw path; ``reason`` one of
    :data:`REFUSAL_REASONS`; a method outside :data:`METHODS` counts as ``OTHER`` and a model
    name that is not a plain identifier as ``other``. A wrong route, reason, status, unit or
    amount is the caller's bug and raises :class:`~kling_cost.errors.ValidationError`.
    """

    def __init__(self) -> None:
        self._dir = _multiprocess_dir()
        self._registry: CollectorRegistry | None = None
        if self._dir is None:
            self._registry = CollectorRegistry()
            ProcessCollector(registry=self._registry)
            self._fams = _families(self._registry)
        else:
            self._fams = _shared_families()

    @property
    def multiprocess(self) -> bool:
        """True when the values are summed over every worker of a shared directory."""
        return self._dir is not None

    def request(self, route: str, method: str, status: int) -> None:
        """One answered request: ``kling_cost_proxy_requests_total{route,method,status}``."""
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValidationError(f"status must be an HTTP status code, not {status!r}")
        verb = method.upper() if isinstance(method, str) else ""
        self._fams.requests.labels(_route(route), verb if verb in METHODS else "OTHER", str(status)).inc()

    def refusal(self, reason: str) -> None:
        """One request refused by the proxy: ``kling_cost_proxy_refusals_total{reason}``."""
        if reason not in REFUSAL_REASONS:
            allowed = ", ".join(REFUSAL_REASONS)
            raise ValidationError(f"refusal reason {reason!r} is unknown; allowed: {allowed}")
        self._fams.refusals.labels(reason).inc()

    def spend(self, scopes: Sequence[str], model: str | None, unit: str, amount: Decimal) -> None:
        """A settled amount: ``kling_cost_proxy_spend_total{scope,model,unit}`` grows by
        ``amount`` for each scope (each once).

        The name carries no unit suffix because the amount's unit varies and is a label
        (``units``: Kling's resource-pack units, ``credits``: the app's), neither being a base
        unit of anything; a query adds within one ``unit`` and one ``scope`` (every charge
        counts in each of its scopes, ``account`` included). Prometheus keeps floats: the
        exposition is a view of the ledger, which holds the exact :class:`~decimal.Decimal`
        figures (``kling-cost report``)."""
        if unit not in UNITS:
            raise ValidationError(f"unit {unit!r} is unknown; allowed: {', '.join(UNITS)}")
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
            raise ValidationError(f"amount must be a finite Decimal of at least 0, not {amount!r}")
        if isinstance(scopes, str):
            raise ValidationError("scopes must be a sequence of scopes, not one string")
        label = model if isinstance(model, str) and _MODEL.fullmatch(model) else "other"
        value = float(amount)
        for scope in dict.fromkeys(scopes):
            self._fams.spend.labels(scope, label, unit).inc(value)

    def upstream_seconds(self, route: str, seconds: float) -> None:
        """How long upstream took to answer one request:
        ``kling_cost_proxy_upstream_request_duration_seconds{route}``."""
        self._fams.upstream.labels(_route(route)).observe(_seconds(seconds))

    def added_seconds(self, route: str, seconds: float) -> None:
        """How long the proxy itself added to one request:
        ``kling_cost_proxy_added_latency_seconds{route}``."""
        self._fams.added.labels(_route(route)).observe(_seconds(seconds))

    def render(self, ledger: Ledger, accept: str | None = None) -> tuple[bytes, str]:
        """The body and ``Content-Type`` of a ``/metrics`` answer: this process's metrics (or
        every worker's, summed) and the ledger's figures as they are now. ``accept``: the
        request's ``Accept`` header (OpenMetrics when the scraper asks for it, else Prometheus'
        text format). A ledger that cannot be read does not fail the scrape:
        ``kling_cost_ledger_up`` says 0 and its figures are left out."""
        registry = CollectorRegistry()
        if self._dir is not None:
            MultiProcessCollector(registry, path=self._dir)  # type: ignore[no-untyped-call]
        elif self._registry is not None:
            registry.register(self._registry)
        registry.register(LedgerCollector(ledger))
        encode, content_type = choose_encoder(accept or "")
        return encode(registry), content_type


def _route(route: str) -> str:
    if not isinstance(route, str) or not _ROUTE.fullmatch(route):
        raise ValidationError(
            f"route must be a template name like 'create' or 'query' (lowercase, at most 32 "
            f"characters), not {route!r}: a raw path would make one series per task"
        )
    return route


def _seconds(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValidationError(f"seconds must be a number, not {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise ValidationError(f"seconds must be finite and at least 0, not {seconds!r}")
    return value


# -- what the ledger holds, read at scrape time ------------------------------------------------


class LedgerCollector:
    """The ledger's figures, read when ``/metrics`` is scraped, in two transactions: the
    usage of every budget in its current window (by the ledger's clock) and the open
    reservations per unit.

    * ``kling_cost_open_reservations{unit}``, ``kling_cost_reserved_amount{unit}``:
      reservations still held (lapsed leases not yet swept included, as the budgets count
      them), how many and how much;
    * ``kling_cost_budget_limit``, ``_used``, ``_reserved``, ``_remaining``
      ``{scope,window,unit}``: each budget in its current window; ``remaining`` is never below
      0; ``kling_cost_budget_window_end_timestamp_seconds{scope,window,unit}`` when that
      window ends (lifetime budgets have none);
    * ``kling_cost_ledger_up``: 1 when the ledger answered, 0 when it could not be read (then
      nothing else of it is reported); ``kling_cost_ledger_scrape_duration_seconds``.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def describe(self) -> list[Metric]:
        """Nothing: registering the collector must not read the ledger."""
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("kling_cost_ledger_up", "1 when the ledger answered this scrape, else 0.")
        try:
            usages = self.ledger.usages()
            held = self.ledger.queries.held()
        except KlingCostError as exc:
            log.warning("metrics: the ledger could not be read: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        count = GaugeMetricFamily(
            "kling_cost_open_reservations", "Reservations still held, by unit.", labels=("unit",)
        )
        amount = GaugeMetricFamily(
            "kling_cost_reserved_amount", "What the open reservations hold, by unit.", labels=("unit",)
        )
        for unit, holds in held.items():
            count.add_metric([unit], holds.count)
            amount.add_metric([unit], float(holds.amount))
        yield count
        yield amount

        labels = ("scope", "window", "unit")
        limit = GaugeMetricFamily(
            "kling_cost_budget_limit", "Each budget's limit, in its unit.", labels=labels
        )
        used = GaugeMetricFamily(
            "kling_cost_budget_used", "What each budget's current window has spent.", labels=labels
        )
        reserved = GaugeMetricFamily(
            "kling_cost_budget_reserved", "What each budget's current window holds.", labels=labels
        )
        remaining = GaugeMetricFamily(
            "kling_cost_budget_remaining",
            "What each budget's current window can still reserve (limit - used - reserved, at least 0).",
            labels=labels,
        )
        ends = GaugeMetricFamily(
            "kling_cost_budget_window_end_timestamp_seconds",
            "When each budget's current window ends (Unix time); lifetime budgets have none.",
            labels=labels,
        )
        for usage in usages:
            key = [usage.scope, usage.budget.window, usage.unit]
            limit.add_metric(key, float(usage.limit))
            used.add_metric(key, float(usage.used))
            reserved.add_metric(key, float(usage.reserved))
            remaining.add_metric(key, float(usage.remaining))
            if usage.window.end is not None:
                ends.add_metric(key, usage.window.end.timestamp())
        yield from (limit, used, reserved, remaining, ends)

        took = GaugeMetricFamily(
            "kling_cost_ledger_scrape_duration_seconds", "How long reading the ledger took for this scrape."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took


class SpendHook:
    """A ledger hook feeding :meth:`ProxyMetrics.spend` with every charge this process settles
    (succeeded tasks: what Kling charged, in the reservation's unit).

    It runs inside the settling transaction: a transaction run again after a lost race
    (PostgreSQL serialisation) counts again, so the counter can run ahead of the ledger by such
    rare retries; the ledger's own figures are exact (``kling-cost report``)."""

    watches_budgets = False

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics

    def after_reserve(
        self, cur: Cursor, now: datetime, reservation: ReservationRow, states: Sequence[WindowState]
    ) -> None:
        return None

    def after_settle(
        self, cur: Cursor, now: datetime, charge: SettledCharge, states: Sequence[WindowState]
    ) -> None:
        if charge.actual_milli > 0 and charge.unit in UNITS:
            amount = from_storage(charge.actual_milli)
            self.metrics.spend(charge.scopes, charge.model, charge.unit, amount)

    def after_budget_set(
        self, cur: Cursor, now: datetime, budget: BudgetRow, previous: BudgetRow | None
    ) -> None:
        return None

    def after_refusal(self, cur: Cursor, now: datetime, refusal: Refusal, scopes: Sequence[str]) -> None:
        return None
