from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    ledger = f"sqlite:///{tmp_path / 'g.db'}"
    open_ledger(ledger).close()  # batch plan only reads: it refuses a missing file
    monkeypatch.setenv("KLING_COST_LEDGER", ledger)
    return ledger


def test_batch_plan_json_and_table(url: str, tmp_path: Path) -> None:
    with open_ledger(url) as ledger:
        ledger.set_budget("project:film", 30, unit="credits")
        ledger.set_budget("project:api", 30)
    file = tmp_path / "p.txt"
    file.write_text("one\ntwo\nthree\n")
    code, out, _ = run(
        "batch",
        "plan",
        str(file),
        "--catalog",
        "kling-app-credits",
        "--mode",
        "pro",
        "--scope",
        "project:film",
        "--json",
    )
    data = json.loads(out)
    assert code == 0 and data["total"] == "105" and data["fit_count"] == 0 and not data["fits"]
    assert data["message"].startswith("Batch needs 105 credits but only 30 remaining.")
    code, out, _ = run("batch", "plan", str(file), "--model", "kling-v2-6", "--scope", "project:api")
    assert code == 0 and "fits within every budget" in out


def test_batch_run_dry_run_and_approval(url: str, tmp_path: Path) -> None:
    file = tmp_path / "p.txt"
    file.write_text("one\n")
    code, out, _ = run("batch", "run", str(file), "--dry-run", "--json")
    assert code == 0 and json.loads(out)["dry_run"] is True
    code, _, err = run("batch", "run", str(file))  # not a terminal, no --yes: refuse to spend
    assert code == 2 and "pass --yes" in err
    with open_ledger(url) as ledger:
        assert ledger.reservations() == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["batch", "plan", "missing.txt"], "cannot read batch file"),
        (["batch", "plan", "{file}", "--model", "kling-v2-6", "--duration", "7"], "p.txt:2: duration 7"),
        (["advise", "--mode", "ultra"], "mode 'ultra'"),
        (["batch", "run", "{file}", "--approve-above", "-1"], "must not be negative"),
        (
            ["batch", "run", "{file}", "--yes", "--config", "no-such.toml"],
            "cannot read the configuration file",
        ),
    ],
)
def test_bad_input_is_one_line(url: str, tmp_path: Path, args: list[str], fragment: str) -> None:
    file = tmp_path / "p.txt"
    file.write_text("# the first row is on line 2, as the progress bar and results say\nx\n")
    code, _, err = run(*[a.replace("{file}", str(file)) for a in args])
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_advise_prices_the_seed_strategies(url: str) -> None:
    code, out, _ = run(
        "advise",
        "--model",
        "kling-v2-6",
        "--mode",
        "pro",
        "--duration",
        "10",
        "--audio",
        "--count",
        "4",
        "--json",
    )
    advice = {a["strategy"]: a for a in json.loads(out)}
    assert code == 0
    assert advice["Skip audio, add in post"]["saving"] == "20"
    assert advice["v2.5 Turbo over v2.6"]["saving"] == "20"
    assert "Standard for drafts" not in advice  # kling-v2-6 offers audio in pro only
    assert advice["5s clips, extend later"]["saving"] == "20"
    assert advice["Batch off-peak"]["saving"] == "0"
    assert "Cache prompts" not in advice  # --count means variations, not duplicates
    code, out, _ = run("advise", "--model", "kling-v1", "--mode", "pro", "--json")
    assert code == 0 and {a["strategy"]: a["saving"] for a in json.loads(out)}["Standard for drafts"] == "2.5"
    code, out, _ = run("advise", "--model", "kling-v1", "--mode", "pro")
    assert code == 0 and "Standard" in out


def test_settle_without_credentials_is_a_clear_error(url: str) -> None:
    code, _, err = run("settle")
    assert code == 2 and "no Kling credentials" in err


def test_demo_runs_on_a_fresh_install(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    proc = subprocess.run(
        [sys.executable, "-m", "kling_cost", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Budgets after the demo" in proc.stdout and "Generations" in proc.stdout
    assert "served from cache 1" in proc.stdout and "failed and refunded 1" in proc.stdout
    assert "reached 80% of its limit" in proc.stdout and "refused a request" in proc.stdout
