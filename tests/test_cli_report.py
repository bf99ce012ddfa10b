"""``kling-cost report`` and ``kling-cost export`` over a real ledger file."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from tests.helpers import FakeClock
from tests.web.conftest import seed


@pytest.fixture
def url(tmp_path: Path) -> str:
    target = f"sqlite:///{tmp_path / 'cli.db'}"
    clock = FakeClock()
    led = open_ledger(target, clock=clock)
    seed(led, clock)
    led.close()
    return target


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_report_json_csv_and_table(url: str) -> None:
    code, out, _ = run(
        "report", "--by", "model", "--since", "2026-06-01", "--format", "json", "--ledger", url
    )
    assert code == 0
    data = json.loads(out)
    assert {r["model"]: r["actual"] for r in data["rows"]} == {
        "kling-v1-6": "25.000",
        "kling-v2-1": "110.000",
    }
    assert data["total"]["saved"] == "35.000" and data["source"] == "rollup"
    code, out, _ = run(
        "report", "--by", "day,status", "--since", "2026-06-14", "--format", "csv", "--ledger", url
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {(r["day"], r["status"]) for r in rows} >= {("2026-06-15", "failed")}
    code, out, _ = run("report", "--by", "project", "--since", "2026-06-01", "--ledger", url)
    assert code == 0 and "total" in out and "│    110 │" in out
    assert "Daily usage of account" in out and "limit 200 per day" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--by", "colour"), "cannot group by"),
        (("--since", "yesterday-ish"), "is not a date"),
        (("--tz", "Mars/Olympus"), "unknown"),
        (("--format", "xml"), "--format"),
    ],
)
def test_report_bad_input_is_one_line_and_exit_2(url: str, args: tuple[str, ...], needle: str) -> None:
    code, out, err = run("report", *args, "--ledger", url)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and not out


def test_export_jsonl_and_csv(url: str, tmp_path: Path) -> None:
    code, out, _ = run("export", "--format", "jsonl", "--ledger", url)
    assert code == 0
    lines = [json.loads(line, parse_float=Decimal) for line in out.splitlines()]
    assert len(lines) == 8
    first = lines[0]
    for field in ("timestamp", "task_id", "credits", "model", "duration", "mode", "prompt_preview"):
        assert field in first
    assert (first["task_id"], first["credits"], first["duration"]) == ("task-0-0", 35, 5)
    assert first["prompt_preview"] == "shot 0-0: a red fox"
    target = tmp_path / "out.csv"
    code, out, _ = run(
        "export", "--format", "csv", "--since", "2026-06-15", "--output", str(target), "--ledger", url
    )
    assert code == 0 and "exported 5 charge(s)" in out
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["status"] for r in rows[-2:]] == ["failed", "cache_hit"]
    assert sum(Decimal(r["credits"]) for r in rows) == Decimal("67.5")
    code, _, err = run("export", "--format", "xml", "--ledger", url)
    assert code == 2 and "jsonl or csv" in err


def test_serve_refuses_a_public_address_without_a_token(url: str) -> None:
    code, _, err = run("serve", "--host", "0.0.0.0", "--ledger", url)
    assert code == 2 and "needs --token" in err
