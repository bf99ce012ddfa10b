"""Alerts of a ``kling-cost batch run`` arrive while it runs (issue 12, item 4): printed on
its terminal, above the progress bar, and delivered to the sinks of the alerts configuration
file (a real webhook receiver here), on both ledger backends."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger
from tests.alerts.conftest import Hook
from tests.terminal import simulator, terminal

pytestmark = pytest.mark.slow


def test_batch_alerts_are_printed_and_sent_while_it_runs(ledger_url: str, hook: Hook, tmp_path: Path) -> None:
    config = tmp_path / "kling-cost.toml"
    config.write_text(f'[alerts]\nsinks = ["{hook.url}"]\nretry_base = 0\n')
    with open_ledger(ledger_url) as ledger:
        ledger.set_budget("account", 350, unit="credits")  # five 70-credit clips
    prompts = tmp_path / "shots.txt"
    prompts.write_text("".join(f"shot {i}: a fox in the snow\n" for i in range(7)))
    args = [
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
        "--poll",
        "0.1",
        "--config",
        str(config),
        "--ledger",
        ledger_url,
    ]
    with (
        simulator("--task-seconds", "3", "--failure-rate", "0") as (base, env),
        terminal([*args, "--base-url", base], env) as term,
    ):
        for percent in (50, 80, 100):  # crossed as the first five rows are reserved
            term.expect(
                rf"ALERT: account day budget \(\S+\) reached {percent}% of its limit: \d+ of 350 credits"
            )
        hook.wait_for(3)
        assert term.proc.poll() is None, "the alerts arrived while the batch was still running"
        assert "Batch summary" not in term.text
        assert term.wait() == 0
        out = term.text
    assert out.index("reached 100%") < out.index("Batch summary")
    assert re.search(r"ALERT: account day budget \(\S+\) refused a request of 70 credits", out)
    sent = [doc["data"] for doc in hook.json()]
    assert sorted(d["threshold"] for d in sent if d["kind"] == "threshold") == ["0.5", "0.8", "1"]
    assert {d["kind"] for d in sent} == {"threshold", "refused"}
    assert all(d["scope"] == "account" and d["unit"] == "credits" for d in sent)
    for d in sent:
        assert out.count(f"ALERT: {d['text']}") == 1, d["text"]  # each printed once, as sent
    with open_ledger(ledger_url) as ledger:
        assert [a.status for a in ledger.alerts()] == ["delivered"] * len(sent)
        assert ledger.usage("account").used == Decimal(350)


def test_batch_without_alert_configuration_prints_them_and_delivers_them(
    ledger_url: str, tmp_path: Path
) -> None:
    """No configuration file: the terminal is the sink (in place of the default log), and the
    alerts are delivered (not left pending for ``alerts deliver``)."""
    with open_ledger(ledger_url) as ledger:
        ledger.set_budget("account", 140, unit="credits", thresholds=["0.5"])
    prompts = tmp_path / "shots.txt"
    prompts.write_text("one\ntwo\n")
    with simulator("--task-seconds", "0.5", "--failure-rate", "0") as (base, env):
        args = ["batch", "run", str(prompts), "--mode", "pro", "--duration", "10"]
        args += ["--catalog", "kling-app-credits", "--yes", "--poll", "0.1"]
        with terminal([*args, "--ledger", ledger_url, "--base-url", base], env) as term:
            assert term.wait() == 0
            out = term.text
    assert out.count("reached 50% of its limit") == 1
    with open_ledger(ledger_url) as ledger:
        [alert] = ledger.alerts()
        assert alert.status == "delivered" and json.dumps(alert.sent_to) == '["alert:callback:terminal"]'


def test_a_failing_sink_is_named_once_and_its_alerts_stay_pending(
    ledger_url: str, hook: Hook, tmp_path: Path
) -> None:
    hook.fail = 1000  # the receiver answers 500 to everything
    config = tmp_path / "kling-cost.toml"
    config.write_text(f'[alerts]\nsinks = ["{hook.url}"]\nretry_base = 0\n')
    with open_ledger(ledger_url) as ledger:
        ledger.set_budget("account", 140, unit="credits", thresholds=["0.5", "1"])
    prompts = tmp_path / "shots.txt"
    prompts.write_text("one\ntwo\n")
    with simulator("--task-seconds", "1.5", "--failure-rate", "0") as (base, env):
        args = ["batch", "run", str(prompts), "--mode", "pro", "--duration", "10", "--config", str(config)]
        args += ["--catalog", "kling-app-credits", "--yes", "--poll", "0.1", "--ledger", ledger_url]
        with terminal([*args, "--base-url", base], env) as term:
            assert term.wait() == 0
            out = term.text
    assert out.count("reached 50% of its limit") == 1 and out.count("reached 100% of its limit") == 1
    host = hook.url.rsplit("/", 1)[0]  # sinks are named by scheme, host and port only
    failing = (
        f"alerts not delivered to webhook:{host}: HTTP 500 Internal Server Error (kept pending, retried)"
    )
    assert out.count(failing) == 1, out  # named once, however often it is retried
    assert (
        "2 alerts not delivered to every sink yet (kept pending; `kling-cost alerts deliver` retries them)"
        in out
    )
    with open_ledger(ledger_url) as ledger:
        alerts = ledger.alerts()
        assert [a.status for a in alerts] == ["pending", "pending"]
        assert all(a.sent_to == ("alert:callback:terminal",) for a in alerts)  # printed: not again
