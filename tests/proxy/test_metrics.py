"""The proxy's /metrics: counters and histograms of this process (or of every worker, summed),
and the ledger's figures read at scrape time, on both ledger backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kling_cost.errors import ConfigurationError, ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.proxy.metrics import (
    ENV_MULTIPROC_DIR,
    REFUSAL_REASONS,
    LedgerCollector,
    ProxyMetrics,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)
from tests.ledger.conftest import clock, ledger, ledger_url

__all__ = ["clock", "ledger", "ledger_url"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], Decimal]


@pytest.fixture(autouse=True)
def no_multiprocess_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process records in single-process mode; whatever a test exports is undone."""
    monkeypatch.delenv(ENV_MULTIPROC_DIR, raising=False)
    yield


def samples(body: bytes) -> Samples:
    """Every sample of a text exposition: (name, sorted labels) -> value, as a Decimal read
    from the printed figure (``7.5`` stays ``7.5``)."""
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = Decimal(repr(s.value))
    return out


def value(found: Samples, name: str, **labels: str) -> Decimal:
    return found[(name, tuple(sorted(labels.items())))]


def budget(found: Samples, what: str, scope: str, window: str = "day", unit: str = "units") -> Decimal:
    return value(found, f"kling_cost_budget_{what}", scope=scope, window=window, unit=unit)


# -- what this process saw -----------------------------------------------------------------------


def test_counters_and_histograms_appear_with_conventional_names(ledger: Ledger) -> None:
    metrics = ProxyMetrics()
    assert not metrics.multiprocess
    metrics.request("create", "POST", 200)
    metrics.request("create", "post", 200)
    metrics.request("query", "GET", 404)
    metrics.request("query", "BREW", 405)  # a client picks the method: unknown ones share a label
    metrics.refusal("budget")
    metrics.refusal("budget")
    metrics.refusal("auth")
    metrics.upstream_seconds("create", 0.120)
    metrics.added_seconds("create", 0.0015)
    metrics.added_seconds("create", 0.004)

    body, content_type = metrics.render(ledger)
    assert content_type.startswith("text/plain")
    found = samples(body)
    assert value(found, "kling_cost_proxy_requests_total", route="create", method="POST", status="200") == 2
    assert value(found, "kling_cost_proxy_requests_total", route="query", method="GET", status="404") == 1
    assert value(found, "kling_cost_proxy_requests_total", route="query", method="OTHER", status="405") == 1
    assert value(found, "kling_cost_proxy_refusals_total", reason="budget") == 2
    assert value(found, "kling_cost_proxy_refusals_total", reason="auth") == 1
    # Every reason is there from the start, so a first refusal is a visible increase.
    assert value(found, "kling_cost_proxy_refusals_total", reason="unknown_path") == 0
    assert {k[1][0][1] for k in found if k[0] == "kling_cost_proxy_refusals_total"} == set(REFUSAL_REASONS)

    added = "kling_cost_proxy_added_latency_seconds"
    assert value(found, f"{added}_count", route="create") == 2
    assert value(found, f"{added}_sum", route="create") == Decimal("0.0055")
    assert value(found, f"{added}_bucket", route="create", le="0.001") == 0
    assert value(found, f"{added}_bucket", route="create", le="0.002") == 1
    assert value(found, f"{added}_bucket", route="create", le="0.005") == 2
    assert value(found, f"{added}_bucket", route="create", le="+Inf") == 2
    upstream = "kling_cost_proxy_upstream_request_duration_seconds"
    assert value(found, f"{upstream}_count", route="create") == 1
    assert value(found, f"{upstream}_bucket", route="create", le="0.1") == 0
    assert value(found, f"{upstream}_bucket", route="create", le="0.25") == 1
    assert value(found, f"{upstream}_bucket", route="create", le="30.0") == 1


def test_instances_do_not_share_counts_in_single_process_mode(ledger: Ledger) -> None:
    one, two = ProxyMetrics(), ProxyMetrics()
    one.request("list", "GET", 200)
    found = samples(two.render(ledger)[0])
    assert (
        "kling_cost_proxy_requests_total",
        (("method", "GET"), ("route", "list"), ("status", "200")),
    ) not in (found)
    assert (
        value(
            samples(one.render(ledger)[0]),
            "kling_cost_proxy_requests_total",
            route="list",
            method="GET",
            status="200",
        )
        == 1
    )


def test_spend_counts_once_per_scope_in_its_unit(ledger: Ledger) -> None:
    metrics = ProxyMetrics()
    metrics.spend(["project:film", "account", "project:film"], "kling-v2-6", "units", Decimal("0.35"))
    metrics.spend(["account"], "kling-v2-6", "units", Decimal("1.4"))
    metrics.spend(["account"], "kling-v2-6", "credits", Decimal("20"))
    metrics.spend(["account"], "kling v2 /../ 6", "units", Decimal("0"))  # a failed task; an odd name
    found = samples(metrics.render(ledger)[0])
    spend = "kling_cost_proxy_spend_total"
    assert value(found, spend, scope="project:film", model="kling-v2-6", unit="units") == Decimal("0.35")
    assert value(found, spend, scope="account", model="kling-v2-6", unit="units") == Decimal("1.75")
    assert value(found, spend, scope="account", model="kling-v2-6", unit="credits") == 20
    assert value(found, spend, scope="account", model="other", unit="units") == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.request("/v1/videos/text2video/abc123", "GET", 200),  # a raw path, not a template
        lambda m: m.request("query", "GET", 1102),
        lambda m: m.request("query", "GET", True),
        lambda m: m.refusal("budgett"),
        lambda m: m.spend(["account"], "kling-v2-6", "dollars", Decimal(1)),
        lambda m: m.spend(["account"], "kling-v2-6", "units", Decimal(-1)),
        lambda m: m.spend(["account"], "kling-v2-6", "units", Decimal("NaN")),
        lambda m: m.spend(["account"], "kling-v2-6", "units", 1.5),
        lambda m: m.spend("account", "kling-v2-6", "units", Decimal(1)),
        lambda m: m.added_seconds("create", -0.001),
        lambda m: m.upstream_seconds("create", float("inf")),
        lambda m: m.upstream_seconds("Create", 0.1),
    ],
)
def test_a_callers_mistake_is_a_validation_error(call: object, ledger: Ledger) -> None:
    metrics = ProxyMetrics()
    with pytest.raises(ValidationError):
        call(metrics)  # type: ignore[operator]
    found = samples(metrics.render(ledger)[0])
    assert not [k for k in found if k[0].startswith("kling_cost_proxy_requests")]


def test_openmetrics_when_the_scraper_asks_for_it(ledger: Ledger) -> None:
    metrics = ProxyMetrics()
    metrics.request("create", "POST", 200)
    body, content_type = metrics.render(ledger, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert b'kling_cost_proxy_requests_total{method="POST",route="create",status="200"} 1.0' in body


# -- what the ledger holds, read at scrape time ---------------------------------------------------


def test_budget_gauges_follow_the_ledger_without_any_call_into_metrics(ledger: Ledger) -> None:
    metrics = ProxyMetrics()
    ledger.set_budget("project:film", 10, "day")
    ledger.set_budget("account", 100, "lifetime")
    ledger.set_budget("user:bob", 50, "month", unit="credits")

    found = samples(metrics.render(ledger)[0])
    assert budget(found, "limit", "project:film") == 10
    assert budget(found, "remaining", "project:film") == 10
    assert budget(found, "used", "project:film") == 0
    assert budget(found, "remaining", "user:bob", "month", "credits") == 50
    assert value(found, "kling_cost_open_reservations", unit="units") == 0
    assert value(found, "kling_cost_ledger_up") == 1

    held = ledger.reserve(Decimal("2.5"), ["project:film"])
    found = samples(metrics.render(ledger)[0])
    assert budget(found, "reserved", "project:film") == Decimal("2.5")
    assert budget(found, "remaining", "project:film") == Decimal("7.5")
    assert budget(found, "remaining", "account", "lifetime") == Decimal("97.5")
    assert value(found, "kling_cost_open_reservations", unit="units") == 1
    assert value(found, "kling_cost_reserved_amount", unit="units") == Decimal("2.5")
    assert value(found, "kling_cost_open_reservations", unit="credits") == 0

    ledger.commit(held, Decimal("1.25"))
    found = samples(metrics.render(ledger)[0])
    assert budget(found, "used", "project:film") == Decimal("1.25")
    assert budget(found, "reserved", "project:film") == 0
    assert budget(found, "remaining", "project:film") == Decimal("8.75")
    assert value(found, "kling_cost_open_reservations", unit="units") == 0
    assert value(found, "kling_cost_reserved_amount", unit="units") == 0
    # Each window is the current one by the ledger's clock: today ends at the next UTC midnight.
    end = datetime(2026, 6, 16, tzinfo=UTC).timestamp()
    assert budget(found, "window_end_timestamp_seconds", "project:film") == Decimal(repr(end))
    assert (
        "kling_cost_budget_window_end_timestamp_seconds",
        (("scope", "account"), ("unit", "units"), ("window", "lifetime")),
    ) not in found


def test_a_new_window_starts_full(ledger: Ledger, clock: object) -> None:
    metrics = ProxyMetrics()
    ledger.set_budget("project:film", 10, "day")
    ledger.charge(Decimal("4"), ["project:film"])
    assert budget(samples(metrics.render(ledger)[0]), "remaining", "project:film") == 6
    clock.advance(days=1)  # type: ignore[attr-defined]
    found = samples(metrics.render(ledger)[0])
    assert budget(found, "remaining", "project:film") == 10
    assert budget(found, "used", "project:film") == 0


def test_a_ledger_that_cannot_be_read_does_not_fail_the_scrape(ledger_url: str) -> None:
    metrics = ProxyMetrics()
    metrics.request("create", "POST", 503)
    gone = open_ledger(ledger_url)
    gone.set_budget("account", 5, "day")
    gone.close()
    found = samples(metrics.render(gone)[0])
    assert value(found, "kling_cost_ledger_up") == 0
    assert not [k for k in found if k[0].startswith("kling_cost_budget_")]
    assert value(found, "kling_cost_proxy_requests_total", route="create", method="POST", status="503") == 1


def test_registering_the_collector_reads_nothing(ledger: Ledger) -> None:
    assert LedgerCollector(ledger).describe() == []


def test_held_counts_live_holds_per_unit(ledger: Ledger) -> None:
    ledger.set_budget("user:bob", 50, "month", unit="credits")
    a = ledger.reserve(Decimal("1.5"), ["project:film"])
    ledger.reserve(Decimal("0.25"), ["project:film"], ttl=timedelta(seconds=5))
    ledger.reserve(Decimal("3"), ["user:bob"], unit="credits")
    released = ledger.reserve(Decimal("9"), ["project:film"])
    ledger.release(released)
    held = ledger.queries.held()
    assert (held["units"].count, held["units"].amount) == (2, Decimal("1.75"))
    assert (held["credits"].count, held["credits"].amount) == (1, Decimal("3"))
    ledger.commit(a)
    assert ledger.queries.held()["units"].count == 1


# -- several workers ------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from decimal import Decimal
    from kling_cost.proxy.metrics import ProxyMetrics

    n = int(sys.argv[1])
    first, second = ProxyMetrics(), ProxyMetrics()  # one set of metrics per process, shared
    assert first.multiprocess and second.multiprocess
    for i in range(n):
        (first if i % 2 else second).request("create", "POST", 200)
        first.added_seconds("create", 0.0015)
    first.refusal("concurrency")
    first.spend(["account"], "kling-v2-6", "units", Decimal("0.125"))
    print("done", flush=True)
    """
)

SCRAPER = textwrap.dedent(
    """
    import sys
    from kling_cost.ledger import open_ledger
    from kling_cost.proxy.metrics import ProxyMetrics

    ledger = open_ledger(sys.argv[1])
    body, content_type = ProxyMetrics().render(ledger)
    ledger.close()
    sys.stdout.write(body.decode())
    """
)


def _env(directory: Path) -> dict[str, str]:
    return {**os.environ, ENV_MULTIPROC_DIR: str(directory)}


@pytest.mark.slow
def test_workers_counts_are_summed_at_every_scrape(ledger: Ledger, ledger_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"from an earlier run")
    assert prepare_multiprocess_dir(directory) == directory  # what the parent does
    assert os.environ[ENV_MULTIPROC_DIR] == str(directory)
    assert not (directory / "counter_999999.db").exists()

    ledger.set_budget("project:film", 10, "lifetime")
    ledger.reserve(Decimal("2.5"), ["project:film"])

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n)], env=_env(directory), stdout=subprocess.PIPE, text=True
        )
        for n in (300, 200)
    ]
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0 and out.strip() == "done"
    assert len(list(directory.glob("counter_*.db"))) == 2  # one file per worker process

    # Any worker answers /metrics with everyone's counts (here a third process).
    scraped = subprocess.run(
        [sys.executable, "-c", SCRAPER, ledger_url],
        env=_env(directory),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = samples(scraped.stdout.encode())
    assert value(found, "kling_cost_proxy_requests_total", route="create", method="POST", status="200") == 500
    assert value(found, "kling_cost_proxy_refusals_total", reason="concurrency") == 2
    assert value(found, "kling_cost_proxy_refusals_total", reason="budget") == 0
    assert value(
        found, "kling_cost_proxy_spend_total", scope="account", model="kling-v2-6", unit="units"
    ) == Decimal("0.25")
    added = "kling_cost_proxy_added_latency_seconds"
    assert value(found, f"{added}_count", route="create") == 500
    assert value(found, f"{added}_bucket", route="create", le="0.002") == 500
    assert value(found, f"{added}_bucket", route="create", le="0.001") == 0
    # The ledger's figures come from the ledger, once, not once per worker.
    assert budget(found, "remaining", "project:film", "lifetime") == Decimal("7.5")
    assert value(found, "kling_cost_open_reservations", unit="units") == 1

    remove_multiprocess_dir(directory)
    assert not directory.exists()
    assert ENV_MULTIPROC_DIR not in os.environ


def test_prepare_makes_a_private_directory_and_keeps_foreign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = prepare_multiprocess_dir()
    try:
        assert made.is_dir() and os.environ[ENV_MULTIPROC_DIR] == str(made)
        assert made.stat().st_mode & 0o077 == 0
    finally:
        remove_multiprocess_dir(made)
    assert not made.exists()

    managed = tmp_path / "managed"
    monkeypatch.setenv(ENV_MULTIPROC_DIR, str(managed))  # a deployment that names its own
    assert prepare_multiprocess_dir() == managed
    (managed / "histogram_42.db").write_bytes(b"x")
    (managed / "gauge_livesum_42.db").write_bytes(b"x")
    (managed / "notes.txt").write_text("not ours")
    assert prepare_multiprocess_dir() == managed
    assert sorted(p.name for p in managed.iterdir()) == ["notes.txt"]
    remove_multiprocess_dir(managed)
    assert (managed / "notes.txt").exists()  # a directory with other files stays
    assert ENV_MULTIPROC_DIR not in os.environ

    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigurationError):
        prepare_multiprocess_dir(a_file)


def test_a_worker_whose_directory_vanished_is_told_clearly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, os
        import prometheus_client  # imported with the variable set: multiprocess mode
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        from kling_cost.errors import ConfigurationError
        from kling_cost.proxy.metrics import ProxyMetrics
        try:
            ProxyMetrics()
        except ConfigurationError as exc:
            print(json.dumps(str(exc)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "PROMETHEUS_MULTIPROC_DIR" in json.loads(out.stdout)
