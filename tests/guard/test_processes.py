"""Batch runs as real processes (the CLI) against the simulator over loopback HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.ledger import open_ledger
from kling_cost.simulator import ManualClock, create_app
from tests.servers import AK, SK, serve

pytestmark = pytest.mark.slow


TASK_SECONDS = 2.0


@contextmanager
def simulated(tmp_path: Path, clock: ManualClock | None = None) -> Iterator[tuple[dict[str, str], Any, str]]:
    app = create_app(
        AK,
        SK,
        clock=clock,
        task_seconds=TASK_SECONDS,
        failure_rate=0.2,
        seed=3,
        concurrency=20,
        video_units=10_000,
    )
    ledger_url = f"sqlite:///{tmp_path / 'shared.db'}"
    with serve(app) as url:
        env = {
            **os.environ,
            "KLING_ACCESS_KEY": AK,
            "KLING_SECRET_KEY": SK,
            "KLING_BASE_URL": url,
            "KLING_COST_LEDGER": ledger_url,
        }
        yield env, app.state.simulator, ledger_url


@pytest.fixture
def sim_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Any, str]]:
    """Kling on the real clock: tasks end on their own, as the processes poll them."""
    with simulated(tmp_path) as made:
        yield made


@pytest.fixture
def still_sim_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Any, str, ManualClock]]:
    """Kling on a clock the test moves: a task runs until the test says its time has come."""
    clock = ManualClock()
    with simulated(tmp_path, clock) as (env, sim, ledger_url):
        yield env, sim, ledger_url, clock


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait for another process (or the server thread) to make ``condition`` true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kling_cost", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def shots(tmp_path: Path, name: str, count: int) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(f"{name} shot {i}" for i in range(count)) + "\n")
    return path


def test_two_batch_processes_share_one_budget(
    sim_env: tuple[dict[str, str], Any, str], tmp_path: Path
) -> None:
    env, sim, ledger_url = sim_env
    with open_ledger(ledger_url) as ledger:
        ledger.set_budget("project:shared", Decimal("9"))  # six 1.5-unit clips in all
    args = [
        "batch",
        "run",
        "--yes",
        "--poll",
        "0.1",
        "--concurrency",
        "4",
        "--scope",
        "project:shared",
        "--model",
        "kling-v2-6",
        "--mode",
        "std",
        "--duration",
        "5",
        "--json",
    ]
    procs = [cli(env, *args[:2], str(shots(tmp_path, n, 8)), *args[2:]) for n in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for name in ("a", "b"):  # the default results file: one line per row
        assert len((tmp_path / f"{name}.results.jsonl").read_text().splitlines()) == 8
    with open_ledger(ledger_url) as ledger:
        u = ledger.usage("project:shared")
        assert u.used <= u.limit and u.reserved == 0
        succeeded = [c for c in ledger.charges() if c.status == "succeeded"]
        assert u.used == sum(c.actual for c in succeeded)
    kling_charged = sum((t.charged or 0) for t in sim.state.tasks.values() if t.status == "succeed")
    assert kling_charged == u.used


def test_sigkill_midway_then_settle_and_rerun(
    still_sim_env: tuple[dict[str, str], Any, str, ManualClock], tmp_path: Path
) -> None:
    """The run is killed with three rows settled, three running at Kling and three never sent;
    the tasks it left end at Kling; ``settle`` and a re-run finish every row exactly once."""
    env, sim, ledger_url, clock = still_sim_env
    file = shots(tmp_path, "k", 9)
    args = [
        "batch",
        "run",
        str(file),
        "--yes",
        "--poll",
        "0.1",
        "--concurrency",
        "3",
        "--model",
        "kling-v1",
        "--json",
    ]
    proc = cli(env, *args)
    with open_ledger(ledger_url) as ledger:

        def attached() -> int:
            return sum(1 for r in ledger.reservations() if r.task_id)

        wait_until(lambda: attached() == 3, "the first three rows run at Kling")
        clock.advance(TASK_SECONDS)  # they end; the run settles them and sends the next three
        wait_until(lambda: attached() == 6, "the next three rows run at Kling")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    submitted_before = len(sim.state.tasks)
    assert submitted_before == 6  # Kling's clock stood still: three still run there
    assert sum(1 for t in sim.state.tasks.values() if t.status in ("submitted", "processing")) == 3
    clock.advance(TASK_SECONDS)  # the tasks the dead process left end on Kling's side
    settle = cli(env, "settle", "--json")
    _, err = settle.communicate(timeout=60)
    assert settle.returncode == 0, err
    again = cli(env, *args)
    wait_until(lambda: len(sim.state.tasks) == 9, "the re-run sends the three rows never sent")
    clock.advance(TASK_SECONDS)  # and they end
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    externals = [t.external_task_id for t in sim.state.tasks.values()]
    assert len(externals) == len(set(externals)) == 9  # every row submitted exactly once
    with open_ledger(ledger_url) as ledger:
        assert ledger.reservations(status="reserved") == []
        charges = ledger.charges()
        assert len(charges) == 9  # one settled record per generation, none twice
        kling = {t.task_id: t for t in sim.state.tasks.values()}
        for c in charges:
            task = kling[c.task_id or ""]
            assert c.status == ("succeeded" if task.status == "succeed" else "failed")
            assert c.actual == (task.charged or 0)
        assert ledger.totals()["units"]["charged"] == sum((t.charged or 0) for t in kling.values())
