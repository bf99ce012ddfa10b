"""``batch run`` with rows that could not be sent (found by an outside review): it exited 0 and
showed only a count, so a script (or a user) took a half-done batch for a done one."""

from __future__ import annotations

import json
from collections.abc import Iterator
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


@pytest.fixture
def kling(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    sim_app = create_app(AK, SK, task_seconds=0, failure_rate=0)
    with serve(sim_app) as base:
        yield base, sim_app.state.simulator


@pytest.mark.parametrize("json_out", [False, True], ids=["table", "json"])
def test_rows_in_error_make_batch_run_exit_1_and_are_named(
    ledger_url: str,  # noqa: F811
    kling: tuple[str, Any],
    tmp_path: Path,
    json_out: bool,
) -> None:
    base, sim = kling
    file = tmp_path / "p.txt"
    file.write_text("a fox\x00 in snow\na good fox\n")  # a NUL is refused before anything is held
    args = ["batch", "run", str(file), "--yes", "--poll", "0.05", "--base-url", base, "--ledger", ledger_url]
    result = runner.invoke(app, [*args, *(["--json"] if json_out else [])])
    assert result.exit_code == 1, result.output
    err = result.stderr.strip().splitlines()
    assert err[-1].startswith("error: 1 row could not be sent") and "p.txt.results.jsonl" in err[-1]
    if json_out:
        assert json.loads(result.stdout)["summary"]["errors"] == 1
    else:
        assert any("line 1:" in line and "NUL" in line for line in err[:-1]), err
    assert len(sim.state.tasks) == 1  # the good row ran
    with open_ledger(ledger_url) as led:
        assert [c.prompt_preview for c in led.charges()] == ["a good fox"]
    again = runner.invoke(app, args)  # the good row is not paid twice; the bad one still fails
    assert again.exit_code == 1 and len(sim.state.tasks) == 1


def test_results_into_the_batch_file_itself_is_refused_before_anything(tmp_path: Path) -> None:
    # Result lines appended to the prompt file would be read back as rows by the next run.
    file = tmp_path / "p.txt"
    file.write_text("a fox\n")
    ledger = tmp_path / "l.db"
    for results in (str(file), str(tmp_path / "." / "p.txt")):
        result = runner.invoke(
            app, ["batch", "run", str(file), "--yes", "--results", results, "--ledger", f"sqlite:///{ledger}"]
        )
        assert result.exit_code == 2, result.output
        assert "is the batch file itself" in result.stderr
    assert file.read_text() == "a fox\n" and not ledger.exists()


def test_a_results_file_that_cannot_be_written_is_refused_before_anything_is_sent(
    ledger_url: str,  # noqa: F811
    kling: tuple[str, Any],
    tmp_path: Path,
) -> None:
    """(Found by review: the task was sent and charged, then the run crashed writing its line
    and hung.) One line, exit 2, nothing reserved or sent."""
    base, sim = kling
    file = tmp_path / "p.txt"
    file.write_text("a quiet owl\n")
    with open_ledger(ledger_url) as led:
        led.set_budget("project:c", limit=100)
    for results in (tmp_path / "missing" / "x.jsonl", tmp_path):  # no such folder; a folder
        args = ["batch", "run", str(file), "--scope", "project:c", "--yes", "--results", str(results)]
        result = runner.invoke(app, [*args, "--poll", "0.05", "--base-url", base, "--ledger", ledger_url])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--results" in lines[0] and "cannot be written" in lines[0], lines
    assert len(sim.state.tasks) == 0
    with open_ledger(ledger_url) as led:
        assert led.charges() == [] and led.reservations() == []


@pytest.mark.parametrize("base_url", ["not a url", "ftp://x", "http://", "127.0.0.1:8790"])
def test_a_base_url_that_is_no_http_url_is_refused_before_anything_is_held(
    ledger_url: str,  # noqa: F811
    kling: tuple[str, Any],
    tmp_path: Path,
    base_url: str,
) -> None:
    """(Found by review: each row was reserved, then failed with UnsupportedProtocol.)"""
    file = tmp_path / "p.txt"
    file.write_text("a quiet owl\n")
    result = runner.invoke(
        app, ["batch", "run", str(file), "--yes", "--base-url", base_url, "--ledger", ledger_url]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not an http:// or https:// URL with a host" in lines[0], lines
    with open_ledger(ledger_url) as led:
        assert led.reservations() == [] and led.charges() == []
