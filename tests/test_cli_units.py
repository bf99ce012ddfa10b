"""The CLI side of budgets with a unit: ``budget set --unit``, the unit beside every amount,
and batches refused before anything is sent when a budget counts another unit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from kling_cost.simulator import create_app
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix
from tests.servers import AK, SK, serve

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def url(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    monkeypatch.setenv("KLING_COST_LEDGER", ledger_url)
    return ledger_url


@pytest.fixture
def kling(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    sim_app = create_app(AK, SK, task_seconds=0.1, failure_rate=0)
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    with serve(sim_app) as base:
        yield base, sim_app.state.simulator


def test_budget_set_unit_and_every_listing_shows_it(url: str) -> None:
    code, out, _ = run("budget", "set", "project:app", "500", "--unit", "credits")
    assert code == 0 and out.strip() == "budget project:app day: 500 credits per day (UTC)"
    code, out, _ = run("budget", "set", "project:app", "600", "--json")  # no --unit: keeps credits
    assert code == 0 and json.loads(out)["unit"] == "credits" and json.loads(out)["limit"] == "600.000"
    code, out, _ = run("budget", "set", "project:api", "20", "--max-per-request", "5")  # new: units
    assert code == 0 and "20 units per day" in out and "max 5 units per request" in out
    with open_ledger(url) as led:
        led.commit(led.reserve(70, ["project:app"], unit="credits", metadata={"prompt": "fox"}), 70)
        led.charge(Decimal("2.5"), ["project:api"], unit="units")
    code, out, _ = run("budget", "list", "--json")
    assert code == 0 and {(b["scope"], b["unit"]) for b in json.loads(out)} == {
        ("project:app", "credits"),
        ("project:api", "units"),
    }
    code, out, _ = run("budget", "show", "project:app")
    assert code == 0 and "600" in out and "credits" in out  # the limit cell: "600 credits"
    code, out, _ = run("usage", "--charges", "5", "--json")
    data = json.loads(out)
    assert {(b["scope"], b["unit"]) for b in data["budgets"]} == {
        ("project:app", "credits"),
        ("project:api", "units"),
    }
    assert sorted((c["unit"], c["actual"]) for c in data["charges"]) == [
        ("credits", "70.000"),
        ("units", "2.500"),
    ]
    assert data["totals"] == {
        "credits": {"charged": "70.000", "reserved": "0.000"},
        "units": {"charged": "2.500", "reserved": "0.000"},
    }
    code, out, _ = run("usage", "--charges", "5")
    assert code == 0
    assert "charged in all: 70 credits; held by open reservations: 0 credits" in out
    assert "charged in all: 2.5 units; held by open reservations: 0 units" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["budget", "set", "account", "5", "--unit", "dollars"], "unit 'dollars' is unknown"),
        (["budget", "set", "project:used", "5", "--unit", "credits"], "cannot switch to credits"),
    ],
)
def test_bad_units_are_one_line_exit_2(url: str, args: list[str], fragment: str) -> None:
    with open_ledger(url) as led:
        led.set_budget("project:used", 10)
        led.charge(1, ["project:used"])
    code, _, err = run(*args)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    with open_ledger(url) as led:
        assert [(b.scope, b.unit) for b in led.budgets()] == [("project:used", "units")]


def test_batch_plan_says_plainly_when_a_budget_counts_another_unit(url: str, tmp_path: Path) -> None:
    """Before: "280 units fit a 500 budget" told to a user whose budget meant credits."""
    run("budget", "set", "account", "500", "--unit", "credits")
    file = tmp_path / "p.txt"
    file.write_text("one\ntwo\nthree\nfour\n")
    code, out, _ = run("batch", "plan", str(file), "--mode", "pro", "--duration", "10", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["unit"] == "units" and plan["catalog"] == "kling-api"
    assert not plan["fits"] and plan["fit_count"] == 0 and plan["remaining"] is None
    assert [b["unit"] for b in plan["unit_mismatch"]] == ["credits"] and plan["budgets"] == []
    message = plan["message"]
    assert "counts credits" in message and "priced in units" in message
    assert "--catalog kling-app-credits" in message and "--unit units" in message
    code, out, _ = run("batch", "plan", str(file), "--mode", "pro", "--duration", "10")
    assert code == 0 and "fits within every budget" not in out and "cannot run" in out
    code, out, _ = run(
        "batch", "plan", str(file), "--mode", "pro", "--duration", "10", "--catalog", "kling-app-credits"
    )
    assert code == 0 and "Batch needs 280 credits but only 500" not in out
    assert "500 of 500 credits remaining" in out and "fits within every budget" in out


def test_batch_run_in_credits_against_a_units_budget_sends_nothing(
    url: str, kling: tuple[str, Any], tmp_path: Path
) -> None:
    base, sim = kling
    run("budget", "set", "account", "500")  # units
    file = tmp_path / "p.txt"
    file.write_text("one\ntwo\n")
    args = ["batch", "run", str(file), "--mode", "pro", "--duration", "10", "--yes", "--base-url", base]
    code, out, err = run(*args, "--catalog", "kling-app-credits")
    assert code == 2 and len(err.strip().splitlines()) == 1, (out, err)
    assert "counts units" in err and "priced in credits" in err and "--catalog kling-api" in err
    assert sim.state.tasks == {}
    with open_ledger(url) as led:
        assert led.reservations() == [] and led.charges() == []
    assert not (tmp_path / "p.txt.results.jsonl").exists()
    code, out, err = run(*args, "--json", "--poll", "0.05")  # priced in units: it runs
    assert code == 0, err
    assert json.loads(out)["summary"]["done"] == 2 and json.loads(out)["summary"]["unit"] == "units"
    with open_ledger(url) as led:
        assert {(c.unit, c.catalog) for c in led.charges()} == {("units", "kling-api")}


def test_estimate_keeps_its_unit() -> None:
    code, out, _ = run("estimate", "--catalog", "kling-app-credits", "--mode", "pro", "--duration", "10")
    assert code == 0 and "70 credits" in out
    code, out, _ = run("estimate", "--model", "kling-v2-6", "--mode", "pro", "--duration", "10", "--json")
    assert code == 0 and json.loads(out)["unit"] == "units"
