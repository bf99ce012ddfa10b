from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from kling_cost.signing import verify_webhook
from tests.alerts.conftest import Hook

runner = CliRunner()
SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="


@pytest.fixture
def url(tmp_path: Path) -> str:
    led = open_ledger(f"sqlite:///{tmp_path / 'cli.db'}")
    led.set_budget("project:film", 100)
    led.reserve(85, ["project:film"])
    led.close()
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_list_deliver_and_list_again(url: str, hook: Hook) -> None:
    code, out, _ = run("alerts", "list", "--pending", "--json", "--ledger", url)
    assert code == 0
    assert [(a["threshold"], a["status"]) for a in json.loads(out)] == [
        ("0.8", "pending"),
        ("0.5", "pending"),
    ]
    code, out, _ = run("alerts", "list", "--ledger", url)
    assert code == 0 and "project:film" in out and "85 / 100" in out
    code, out, _ = run("alerts", "deliver", "--sink", hook.url, "--ledger", url, "--json")
    assert code == 0 and json.loads(out)["delivered"] == 2
    assert sorted(p["data"]["threshold"] for p in hook.json()) == ["0.5", "0.8"]
    code, out, _ = run("alerts", "list", "--pending", "--ledger", url)
    assert code == 0 and "no pending alerts" in out


def test_deliver_reports_failures_and_keeps_them_pending(url: str, hook: Hook) -> None:
    hook.fail = 10
    code, out, _ = run("alerts", "deliver", "--sink", hook.url, "--ledger", url)
    assert code == 1 and "delivered 0 alert(s)" in out and "HTTP 500" in out
    code, out, _ = run("alerts", "list", "--pending", "--json", "--ledger", url)
    assert {a["attempts"] for a in json.loads(out)} == {1}


def test_config_file_sinks_and_dashboard(url: str, hook: Hook, tmp_path: Path) -> None:
    config = tmp_path / "kling-cost.toml"
    config.write_text(
        f'[alerts]\nsinks = ["{hook.url}"]\nwebhook_secret = "{SECRET}"\ndashboard_url = "http://dash/"\n'
    )
    code, _, err = run("alerts", "deliver", "--config", str(config), "--ledger", url)
    assert code == 0, err
    for headers, body in hook.accepted:
        verify_webhook(SECRET, headers, body)
    assert {p["data"]["dashboard_url"] for p in hook.json()} == {"http://dash/"}


def test_alerts_test_sends_a_sample(hook: Hook) -> None:
    code, out, _ = run("alerts", "test", hook.url, "--secret", SECRET)
    origin = hook.url.removesuffix("/hook")
    assert code == 0 and f"sent a sample alert to webhook:{origin}\n" in out and "/hook" not in out
    [(headers, body)] = hook.accepted
    verify_webhook(SECRET, headers, body)
    assert json.loads(body)["data"]["top_consumers"][0]["name"] == "kling-v2-6/pro"


def test_alerts_test_to_a_failing_receiver_exits_1(hook: Hook) -> None:
    hook.fail = 1
    code, _, err = run("alerts", "test", hook.url)
    assert code == 1 and "did not accept the sample alert" in err and "HTTP 500" in err


@pytest.mark.parametrize(
    "args",
    [
        ("alerts", "test", "ftp://nope"),
        ("alerts", "test", "smtp://mail.example.com"),
        ("alerts", "deliver", "--sink", "slack://x"),
    ],
)
def test_bad_sink_urls_print_one_line_and_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    code, out, err = (
        run(*args, "--ledger", f"sqlite:///{tmp_path / 'x.db'}") if "deliver" in args else run(*args)
    )
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[alerts]\nsinks = ["gopher://x"]\n')
    code, _, err = run(
        "alerts", "deliver", "--config", str(config), "--ledger", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert code == 2 and "unknown scheme 'gopher'" in err and len(err.strip().splitlines()) == 1


def test_deliver_loop_runs_until_interrupted(url: str, hook: Hook) -> None:
    env = {**os.environ, "KLING_COST_LEDGER": url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kling_cost",
            "alerts",
            "deliver",
            "--sink",
            hook.url,
            "--loop",
            "--interval",
            "0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hook.wait_for(2, timeout=30)
        led = open_ledger(url)
        led.reserve(15, ["project:film"])  # 100 %: picked up by the running loop
        led.close()
        hook.wait_for(3, timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "delivered 3 alert(s)" in out
    assert sorted(p["data"]["threshold"] for p in hook.json()) == ["0.5", "0.8", "1"]
