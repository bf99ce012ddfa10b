"""The must-show of issue 11, item 1, end to end with real processes on both ledger backends.

``kling-cost simulate`` on a loopback port; ``budget set account 500 --unit credits``; a batch
of 10 s professional clips priced with ``--catalog kling-app-credits`` (70 credits each);
SIGINT twice while tasks run; ``kling-cost settle`` with no flags (the ledger and the base URL
from the environment, its catalog default is ``kling-api``, in units); the batch run again.
Before the fix ``settle`` committed each 70-credit reservation as Kling's units and the re-run
spent far more than 500 credits. Now the ledger's used credits are exactly 70 x the tasks the
simulator ran, never above the limit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix
from tests.terminal import simulator as run_simulator
from tests.terminal import wait_all_ended

pytestmark = pytest.mark.slow

PER_CLIP = Decimal(70)  # kling-app-credits: 10 s professional
LIMIT = Decimal(500)


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kling_cost", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _done(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    proc = _cli(env, *args)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (args, out, err)
    return out


@pytest.fixture
def simulator() -> Iterator[tuple[str, dict[str, str]]]:
    """``kling-cost simulate`` in its own process, on a free loopback port."""
    with run_simulator("--task-seconds", "1.5", "--failure-rate", "0", "--concurrency", "5") as running:
        yield running


def test_interrupted_credit_batch_settled_without_flags_never_overspends(
    simulator: tuple[str, dict[str, str]],
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    base, env = simulator
    _done(env, "budget", "set", "account", str(LIMIT), "--unit", "credits", "--ledger", ledger_url)
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"shot {i}: a fox in the snow\n" for i in range(12)))
    batch = [
        "batch",
        "run",
        str(prompts),
        "--mode",
        "pro",
        "--duration",
        "10",
        "--catalog",
        "kling-app-credits",
        "--yes",
        "--base-url",
        base,
        "--ledger",
        ledger_url,
        "--poll",
        "0.1",
    ]
    run = _cli(env, *batch)
    with open_ledger(ledger_url) as ledger:  # wait until tasks run on Kling's side
        deadline = time.monotonic() + 30
        while sum(1 for r in ledger.reservations(status="reserved") if r.task_id) < 3:
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=30)
    assert run.returncode != 0, err  # interrupted, not finished
    with open_ledger(ledger_url) as ledger:
        left = ledger.reservations(status="reserved")
        assert left, "the interrupted run left holds for its running tasks"
        assert {(r.unit, r.catalog, r.amount) for r in left} == {("credits", "kling-app-credits", PER_CLIP)}
    wait_all_ended(base)

    # `kling-cost settle` with no flags: the ledger and Kling's URL come from the environment.
    settle_env = {**env, "KLING_COST_LEDGER": ledger_url, "KLING_BASE_URL": base}
    out = _done(settle_env, "settle")
    assert "errors 0" in out
    with open_ledger(ledger_url) as ledger:
        assert ledger.reservations(status="reserved") == []
        settled = ledger.usage("account")
        assert settled.used % PER_CLIP == 0 and settled.used > 0  # 70 per clip, not Kling's units

    _done(env, *batch)  # the re-run: settled rows are skipped, the rest stop at the ceiling
    tasks = wait_all_ended(base)
    ran = [t for t in tasks if t["task_status"] == "succeed"]
    externals = [t["task_info"]["external_task_id"] for t in tasks]
    assert len(externals) == len(set(externals))  # no row sent twice
    with open_ledger(ledger_url) as ledger:
        usage = ledger.usage("account")
        assert usage.unit == "credits" and usage.reserved == 0
        assert usage.used == PER_CLIP * len(ran)
        assert usage.used <= LIMIT
        assert len(ran) == LIMIT // PER_CLIP  # the ceiling was reached, not crossed
        charges = [c for c in ledger.charges() if c.status == "succeeded"]
        assert {(c.unit, c.actual, c.catalog) for c in charges} == {
            ("credits", PER_CLIP, "kling-app-credits")
        }
        assert sorted(c.task_id or "" for c in charges) == sorted(t["task_id"] for t in ran)
