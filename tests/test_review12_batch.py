"""Outside review of issue 12's ``batch run`` (what a new user or an attacker hits)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger
from tests.helpers import fresh_postgres_url, need_postgres
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix
from tests.terminal import simulator, terminal

pytestmark = pytest.mark.slow


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


@pytest.mark.postgres
def test_resume_and_settle_commands_never_print_the_ledger_password(tmp_path: Path) -> None:
    """The resume command is printed to the terminal (and CI logs): a PostgreSQL password given
    with --ledger must not be in it (the project shows ledger URLs as ``user:***@``)."""
    need_postgres()
    url = _with_password(fresh_postgres_url(), "s3cr3t-pw")  # trust auth: any password connects
    try:
        with open_ledger(url) as led:
            led.set_budget("account", Decimal(100), unit="credits")
        prompts = tmp_path / "shots.txt"
        prompts.write_text("".join(f"shot {i}: a fox in the snow\n" for i in range(4)))
        with simulator("--task-seconds", "0.2", "--failure-rate", "0") as (base, env):
            args = ["batch", "run", str(prompts), "--mode", "pro", "--duration", "10"]
            args += ["--catalog", "kling-app-credits", "--base-url", base, "--ledger", url]
            args += ["--poll", "0.05", "--yes"]
            for extra in ([], ["--json"]):
                proc = subprocess.run(
                    [sys.executable, "-m", "kling_cost", *args, *extra],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert proc.returncode == 0, proc.stderr
                assert "not sent" in proc.stdout or "resume" in proc.stdout  # a resume command is shown
                assert "s3cr3t-pw" not in proc.stdout + proc.stderr
                assert "postgres:***@" in proc.stdout
                if not extra:
                    assert "password is shown as ***" in proc.stdout
    finally:
        with open_ledger(url) as cleanup:
            cleanup.backend.drop_schema()  # type: ignore[attr-defined]


@contextmanager
def _black_hole() -> Iterator[str]:
    """A webhook receiver that takes connections and never answers (a slow sink)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM"])
def test_ctrl_c_while_a_slow_sink_holds_the_last_alert_pass_still_prints_summary_and_resume(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
    stop: str,
) -> None:
    """Every row has ended; the last alert pass waits on a webhook that never answers. A
    Ctrl-C (or a SIGTERM, named as such) then leaves the alerts pending (nothing lost) and
    still prints the summary and the command that resumes (before: exit 130 with neither, the
    issue's very complaint)."""
    with open_ledger(ledger_url) as led:
        led.set_budget("account", Decimal(100), unit="credits")
    prompts = tmp_path / "shots.txt"
    prompts.write_text("".join(f"shot {i}: a fox in the snow\n" for i in range(4)))
    results = tmp_path / "results.jsonl"
    with _black_hole() as hook, simulator("--task-seconds", "0.3", "--failure-rate", "0") as (base, env):
        config = tmp_path / "alerts.toml"
        config.write_text(f'[alerts]\nsinks = ["{hook}"]\ntimeout = 20\n')
        args = ["batch", "run", str(prompts), "--mode", "pro", "--duration", "10"]
        args += ["--catalog", "kling-app-credits", "--base-url", base, "--ledger", ledger_url]
        args += ["--poll", "0.05", "--yes", "--config", str(config), "--results", str(results)]
        with terminal(args, env) as term:
            deadline = time.monotonic() + 20
            while not results.exists() or len(results.read_text().splitlines()) < 4:
                assert term.proc.poll() is None and time.monotonic() < deadline, term.text
                time.sleep(0.05)
            time.sleep(1.5)  # the run is over; the last alert pass waits on the sink
            assert term.proc.poll() is None, term.text
            if stop == "SIGTERM":
                term.proc.send_signal(signal.SIGTERM)
            else:
                term.ctrl_c()
            term.expect(r"Batch summary", timeout=3)
            term.expect(r"rows? not sent; run the same command when the budget has room:", timeout=3)
            assert term.wait(5) == 0
            assert "kling-cost batch run" in term.text
            assert f"retries them): left by {stop}" in term.text, term.text
    with open_ledger(ledger_url) as led:
        assert led.usage("account").used == 70 and led.reservations(status="reserved") == []
        assert led.alerts(status="pending"), "the alerts the sink did not take stay pending"


def test_a_signal_as_the_run_ends_still_cuts_a_slow_last_alert_pass(ledger_url: str) -> None:  # noqa: F811
    """A SIGTERM (or Ctrl-C) that lands after the run's last look at its signals, just before
    the last alert pass, is not lost: a sink that does not answer is left to its thread (the
    alert stays pending unless it answers) as for a signal during the pass, instead of holding
    the process for its timeout."""
    import io

    from rich.console import Console

    from kling_cost.alerts import CallbackSink, Deliverer
    from kling_cost.batch import BatchRunner
    from kling_cost.cli._batchrun import _last_alerts

    release = threading.Event()
    with open_ledger(ledger_url) as led:
        led.set_budget("account", 10, thresholds=["1"])
        led.reserve(10)
        deliverer = Deliverer(led, [CallbackSink(lambda text: release.wait(8), text=True, name="slow")])
        runner = BatchRunner(None, [])  # type: ignore[arg-type] # only its signal counts are read
        runner.interrupt()  # the handler ran; run() had returned without noticing it
        started = time.monotonic()
        try:
            report = _last_alerts(deliverer, runner, Console(file=io.StringIO()), ["SIGTERM"])
            elapsed = time.monotonic() - started
        finally:
            release.set()
            for thread in threading.enumerate():  # the pass left behind ends before the ledger closes
                if thread.name == "kling-batch-alerts":
                    thread.join(20)
        assert elapsed < 5, "the last pass waited for the sink"
        assert report.errors == ["last alert pass: left by SIGTERM"]
