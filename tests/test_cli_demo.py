"""``kling-cost demo`` keeps what it did where ``report`` and ``serve`` find it, and says how
(issue 12, item 5): ``kling-cost demo`` then the ``kling-cost report --ledger ...`` it prints
shows the demo's charges. By default its ledger is a file of its own (replaced by the next
demo), never the default ledger; with ``--ledger`` (PostgreSQL here) it is that one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from kling_cost.ledger import default_ledger_url, open_ledger
from tests.servers import free_port
from tests.terminal import command_args

pytestmark = pytest.mark.slow


def _kling_cost(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kling_cost", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_demo_then_the_printed_report_shows_its_charges(ledger_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env["COLUMNS"] = "250"  # the printed commands on one line each
    default = default_ledger_url()  # a user's real ledger (XDG_DATA_HOME is a temp dir here)
    with open_ledger(default) as real:
        real.set_budget("account", 100)
        real.commit(real.reserve(7, ["account"]), 7)
    args = ["demo"] if ledger_url.startswith("sqlite") else ["demo", "--ledger", ledger_url]
    demo_file = Path(os.environ["XDG_DATA_HOME"]) / "kling-cost" / "demo.db"  # as documented
    if ledger_url.startswith("sqlite"):  # an earlier demo's ledger: replaced, not added to
        with open_ledger(f"sqlite:///{demo_file}") as old:
            old.commit(old.reserve(5, ["project:old"]), 5)

    demo = _kling_cost(env, tmp_path, *args)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    planned = re.search(r"planned (\d+) clips = 19\.5 units", out)
    bar = re.search(r"finished\W+(\d+)/(\d+)", out)
    assert planned and bar, out
    assert planned[1] == bar[1] == bar[2] == "13"  # the plan and the bar count the same clips
    assert "failed and refunded 1" in out and "served from cache 1" in out
    tried = re.search(r"Try next:\n((?:  kling-cost .+\n){3})", out)
    assert tried, out
    commands = [command_args(line.strip()) for line in tried[1].splitlines()]
    assert [c[:-2] for c in commands] == [["report"], ["serve"], ["alerts", "list"]]
    [shown] = {tuple(c[-2:]) for c in commands}
    assert shown[0] == "--ledger" and shown[1] != default
    assert shown[1] == (f"sqlite:///{demo_file}" if ledger_url.startswith("sqlite") else ledger_url)

    report = _kling_cost(env, tmp_path, *commands[0], "--format", "json")  # the printed command, as JSON
    assert report.returncode == 0, report.stderr
    [totals] = json.loads(report.stdout)["totals"]
    assert (totals["unit"], totals["charges"], totals["succeeded"]) == ("units", 10, 8)
    assert (totals["failed"], totals["cache_hits"], Decimal(totals["actual"])) == (1, 1, Decimal(12))

    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "kling_cost", *commands[1], "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/charges", timeout=5)
                break
            except httpx.TransportError:
                assert serve.poll() is None and time.monotonic() < deadline, serve.communicate()
                time.sleep(0.1)
        assert answer.status_code == 200 and "a red fox trotting" in answer.text
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.communicate()

    with open_ledger(default) as real:  # the user's own ledger was not touched
        assert [c.actual for c in real.charges()] == [Decimal(7)]
        assert [u.scope for u in real.usages()] == ["account"]
