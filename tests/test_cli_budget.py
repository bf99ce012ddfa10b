from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    target = f"sqlite:///{tmp_path / 'cli.db'}"
    open_ledger(target).close()  # read-only commands refuse a missing file
    return target


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_budget_lifecycle(url: str) -> None:
    code, out, _ = run(
        "budget",
        "set",
        "project:film",
        "200",
        "--window",
        "week",
        "--tz",
        "America/New_York",
        "--max-per-request",
        "35",
        "--thresholds",
        "0.5,0.9",
        "--ledger",
        url,
        "--json",
    )
    assert code == 0
    assert json.loads(out)["max_per_request"] == "35.000"
    with open_ledger(url) as led:
        led.commit(led.reserve(20, ["project:film"], metadata={"prompt": "dawn", "model": "kling-v1"}), 18)
    code, out, _ = run("budget", "show", "project:film", "--ledger", url, "--json")
    [row] = json.loads(out)
    assert (row["used"], row["remaining"], row["thresholds"]) == ("18.000", "182.000", ["0.5", "0.9"])
    code, out, _ = run("usage", "--ledger", url, "--charges", "5", "--json")
    data = json.loads(out)
    assert data["charges"][0]["prompt_preview"] == "dawn" and data["totals"]["units"]["charged"] == "18.000"
    code, out, _ = run("usage", "--ledger", url, "--charges", "5")
    assert code == 0 and "dawn" in out
    code, out, _ = run("budget", "list", "--ledger", url)
    assert code == 0 and "project:" in out and "182" in out
    code, _, _ = run("budget", "delete", "project:film", "--window", "week", "--ledger", url)
    assert code == 0
    with open_ledger(url) as led:
        assert led.budgets() == [] and led.totals()["units"]["charged"] == Decimal(18)


def test_env_variable_selects_the_ledger(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_COST_LEDGER", url)
    assert run("budget", "set", "account", "10")[0] == 0
    with open_ledger(url) as led:
        assert [b.scope for b in led.budgets()] == ["account"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["budget", "set", "project:x", "0"], "greater than zero"),
        (["budget", "set", "project:x", "--", "-3"], "negative"),
        (["budget", "set", "Bad Scope", "10"], "is not valid"),
        (["budget", "set", "account", "10", "--window", "year"], "window 'year' is unknown"),
        (["budget", "set", "account", "10", "--tz", "Nowhere/City"], "time zone"),
        (["budget", "set", "account", "1.0001"], "finer than 0.001"),
        (["budget", "show", "project:none"], "no budget"),
        (["budget", "delete", "project:none"], "no day budget"),
        (["usage", "--at", "yesterday"], "--at"),
    ],
)
def test_bad_input(url: str, args: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_COST_LEDGER", url)
    code, out, err = run(*args)
    assert code == 2, out + err
    assert fragment in err and len(err.strip().splitlines()) == 1
    with open_ledger(url) as led:
        assert led.budgets() == []


def test_bad_ledger_url_is_one_line(tmp_path: Path) -> None:
    for bad in ("mysql://x/y", f"sqlite:///{tmp_path}/missing/x.db"):
        code, _, err = run("usage", "--ledger", bad)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_ledger_migrate_and_sweep(url: str) -> None:
    code, out, _ = run("ledger", "migrate", "--ledger", url, "--json")
    assert code == 0 and json.loads(out)["schema_version"] >= 2
    code, out, _ = run("ledger", "sweep", "--ledger", url, "--json")
    assert code == 0 and json.loads(out) == {"reclaimed": 0}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--thresholds", ",,"], "--thresholds ',,' names no threshold"),
        (["--thresholds", " , "], "or --no-alerts"),
        (["--thresholds", "0.5", "--no-alerts"], "not both"),
    ],
)
def test_thresholds_that_switch_alerts_off_by_accident_are_refused(
    ledger_url: str, args: list[str], fragment: str
) -> None:
    code, out, err = run("budget", "set", "project:x", "100", *args, "--ledger", ledger_url)
    assert code == 2, out + err
    assert fragment in err and len(err.strip().splitlines()) == 1
    with open_ledger(ledger_url) as led:
        assert led.budgets() == []


def test_no_alerts_switches_threshold_alerts_off_explicitly(ledger_url: str) -> None:
    code, out, err = run("budget", "set", "project:x", "10", "--no-alerts", "--ledger", ledger_url)
    assert code == 0, out + err
    assert "no threshold alerts" in out
    with open_ledger(ledger_url) as led:
        [budget] = led.budgets()
        assert budget.thresholds == ()
        led.reserve(10, ["project:x"])
        assert led.alerts() == []
    code, out, _ = run("budget", "show", "project:x", "--json", "--ledger", ledger_url)
    assert code == 0 and json.loads(out)[0]["thresholds"] == []
