"""``kling-cost forecast`` and the forecasts of ``kling-cost alerts deliver``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from tests.helpers import FakeClock

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A lifetime budget of 100 that spent 20 units a day for the last three days (the CLI
    runs on the real clock), and a day budget with nothing spent."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    now = datetime.now(UTC)
    clock = FakeClock(now - timedelta(days=3))
    led = open_ledger(url, clock=clock)
    led.set_budget("project:film", 100, "lifetime", thresholds=["1"])
    led.set_budget("project:ads", 50, thresholds=["1"])
    for day in (3, 2, 1):
        clock.set(now - timedelta(days=day))
        led.commit(led.reserve(20, ["project:film"]), 20)
    led.close()
    return url


def test_json_shape_and_alerts(url: str) -> None:
    code, out, err = run("forecast", "--json", "--ledger", url)
    assert code == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"at", "budgets", "alerts"} and data["alerts"] == []
    rows = {b["scope"]: b for b in data["budgets"]}
    film, ads = rows["project:film"], rows["project:ads"]
    assert set(film) == {
        "budget_id", "scope", "window", "window_key", "tz", "unit", "limit", "used", "reserved", "at",
        "horizon", "since", "spent", "events", "rate_per_hour", "projected", "runs_out_at", "over", "reason",
    }  # fmt: skip
    assert (film["window"], film["used"], film["events"], film["over"]) == ("lifetime", "60.000", 3, True)
    assert film["projected"] is not None and film["runs_out_at"] is not None and film["reason"] is None
    assert ads["projected"] is None and ads["reason"].startswith("not enough data yet")
    code, out, _ = run("forecast", "--alert", "--json", "--ledger", url)
    (alert,) = json.loads(out)["alerts"]
    assert (alert["kind"], alert["threshold"], alert["scope"]) == ("forecast", "forecast", "project:film")
    code, out, _ = run("forecast", "--alert", "--json", "--ledger", url)
    assert json.loads(out)["alerts"] == []  # once per window


def test_table(url: str) -> None:
    code, out, _ = run("forecast", "--ledger", url)
    assert code == 0
    assert "project:film" in out and "(over)" in out and "not enough data yet" in out


def test_alerts_deliver_evaluates_forecasts(url: str) -> None:
    code, out, _ = run("alerts", "deliver", "--no-forecast", "--sink", "log://", "--json", "--ledger", url)
    assert code == 0 and json.loads(out)["delivered"] == 0
    code, out, _ = run("alerts", "deliver", "--sink", "log://", "--json", "--ledger", url)
    assert code == 0 and json.loads(out)["delivered"] == 1
    code, out, _ = run("alerts", "list", "--json", "--ledger", url)
    (alert,) = json.loads(out)
    assert alert["kind"] == "forecast" and alert["message"].startswith("Budget project:film lifetime")


def test_one_line_errors(tmp_path: Path) -> None:
    code, out, err = run("forecast", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}")
    assert code == 4 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    code, _, err = run("forecast", "--alert", "--days", "-1", "--ledger", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--days" in err
