"""Budgets of two units and ``account`` (found by an outside review): every reservation also
counts on ``account``, so "use another scope" is no way out of an ``account`` budget in the
other unit, and a budget that can never be charged is pointed out when it is set."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost import UnitMismatch, plan_batch
from kling_cost.cli import app
from kling_cost.ledger import Ledger, open_ledger
from tests.ledger.conftest import clock, ledger, ledger_url

__all__ = ["clock", "ledger", "ledger_url"]

runner = CliRunner()


def test_a_mismatch_on_account_says_to_change_or_delete_that_budget(ledger: Ledger) -> None:
    ledger.set_budget("account", 500, "day", unit="credits")
    with pytest.raises(UnitMismatch) as info:
        ledger.reserve(5, ["project:film"], unit="units")
    message = str(info.value)
    assert "on another scope" not in message  # another scope still counts on account
    assert "kling-cost budget delete account --window day" in message
    assert "--unit units" in message and "--catalog kling-app-credits" in message
    assert ledger.usage("account").reserved == 0


def test_a_mismatch_on_another_scope_still_suggests_another_scope(ledger: Ledger) -> None:
    ledger.set_budget("project:app", 500, unit="credits")
    with pytest.raises(UnitMismatch, match="on another scope"):
        ledger.reserve(5, ["project:app"], unit="units")


def test_batch_plan_against_an_account_of_another_unit_gives_a_way_out(ledger: Ledger) -> None:
    ledger.set_budget("account", 100, unit="units")
    plan = plan_batch([{"mode": "pro", "duration": 10}], ledger, ["project:x"], catalog="kling-app-credits")
    assert plan.mismatched and "on another scope" not in plan.unit_problem
    assert "kling-cost budget delete account --window day" in plan.unit_problem


def test_budget_set_points_out_a_budget_that_account_makes_unusable(ledger_url: str) -> None:
    result = runner.invoke(app, ["budget", "set", "account", "1000", "--ledger", ledger_url])
    assert result.exit_code == 0 and result.stderr == ""
    result = runner.invoke(
        app, ["budget", "set", "project:app", "500", "--unit", "credits", "--ledger", ledger_url]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("note: every reservation also counts on account")
    assert "reservations in credits on project:app will be refused" in result.stderr
    result = runner.invoke(app, ["budget", "set", "project:film", "50", "--ledger", ledger_url])
    assert result.exit_code == 0 and result.stderr == ""  # same unit as account: nothing to say
    with open_ledger(ledger_url) as led:
        assert {(b.scope, b.unit) for b in led.budgets()} == {
            ("account", "units"),
            ("project:app", "credits"),
            ("project:film", "units"),
        }


def test_budget_set_on_account_names_the_budgets_it_strands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert (
        runner.invoke(
            app, ["budget", "set", "project:app", "500", "--unit", "credits", "--ledger", url]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["budget", "set", "account", "1000", "--window", "month", "--ledger", url])
    assert result.exit_code == 0, result.output
    assert "the budgets of project:app in another unit can no longer be charged" in result.stderr
