"""``kling-cost report`` and ``kling-cost export`` over a real ledger file."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.cli._common import console
from kling_cost.cli.report import _bar_chart, _table
from kling_cost.errors import StorageError
from kling_cost.ledger import open_ledger
from kling_cost.reports import daily_usage, report
from tests.helpers import FakeClock
from tests.ledger.conftest import ledger_url
from tests.reports.seeds import seed_mixed
from tests.web.conftest import seed

__all__ = ["ledger_url"]


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
    assert [(t["unit"], t["saved"]) for t in data["totals"]] == [("units", "35.000")]
    assert data["source"] == "rollup" and {r["unit"] for r in data["rows"]} == {"units"}
    code, out, _ = run(
        "report", "--by", "day,status", "--since", "2026-06-14", "--format", "csv", "--ledger", url
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {(r["day"], r["status"]) for r in rows} >= {("2026-06-15", "failed")}
    assert {r["unit"] for r in rows} == {"units"}
    code, out, _ = run("report", "--by", "project", "--since", "2026-06-01", "--ledger", url)
    assert code == 0 and re.search(r"│ tota.? +│ units +│", out) and re.search(r"│ +110 │", out)
    assert "Daily usage of account in units" in out and "limit 200 units per day" in out


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


def test_report_and_export_of_two_units_on_both_backends(ledger_url: str) -> None:
    clock = FakeClock()
    led = open_ledger(ledger_url, clock=clock)
    seed_mixed(led, clock)
    led.close()
    code, out, _ = run(
        "report", "--by", "key", "--since", "2026-06-01", "--format", "json", "--ledger", ledger_url
    )
    data = json.loads(out)
    assert code == 0 and data["units"] == ["units", "credits"]
    assert [(r["key"], r["unit"], r["actual"]) for r in data["rows"]] == [
        ("key:k1", "units", "6.000"),
        ("key:k1", "credits", "140.000"),
    ]
    assert [(t["unit"], t["actual"]) for t in data["totals"]] == [("units", "6.000"), ("credits", "140.000")]
    code, out, _ = run(
        "report", "--by", "model", "--since", "2026-06-01", "--format", "csv", "--ledger", ledger_url
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {(r["model"], r["unit"], r["actual"]) for r in rows} == {
        ("kling-v2-1", "units", "6"),
        ("kling-v2-1", "credits", "140"),
        ("kling-v1-6", "units", "0"),
    }
    code, out, _ = run("report", "--by", "model", "--since", "2026-06-01", "--ledger", ledger_url)
    assert code == 0 and "credits" in out and "units" in out and "146" not in out
    # The table and the daily bars, rendered wide enough to read a row on one line.
    led = open_ledger(ledger_url, clock=clock)
    try:
        wide = Console(width=200, record=True)
        wide.print(_table(report(led, "model", since="30d")))
        table = wide.export_text()
        with console.capture() as captured:
            _bar_chart(daily_usage(led, 2))
        bars = captured.get()
    finally:
        led.close()
    # Two total rows, each in its unit; never one row adding 6 units to 140 credits.
    assert re.search(r"│ kling-v2-1 +│ credits +│ +3 │ .*│ +140 │", table)
    assert re.search(r"│ total +│ units +│ +3 │ .*│ +6 │", table)
    assert re.search(r"│ total +│ credits +│ +3 │ .*│ +140 │", table)
    assert "146" not in table
    assert "Daily usage of account in units (UTC; no daily budget)" in bars
    assert "Daily usage of account in credits (UTC; no daily budget)" in bars
    assert re.search(r"2026-06-15 █+ +70 credits", bars) and re.search(r"2026-06-15 █+ +3 units", bars)
    code, out, _ = run("export", "--format", "csv", "--ledger", ledger_url)
    exported = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["task_id"], r["credits"], r["unit"]) for r in exported[:2]] == [
        ("film-14", "70", "credits"),
        ("api-14", "3", "units"),
    ]


def test_a_charge_with_an_unknown_status_is_named_not_a_traceback(url: str) -> None:
    """A charge row edited by hand (or written by a newer version) into a status this version
    does not know: reports from the charges say which, in one line, and exit non-zero."""
    with open_ledger(url) as led:
        with led.transaction() as cur:
            cur.execute("UPDATE charges SET status = 'refunded' WHERE id = (SELECT MIN(id) FROM charges)")
        with pytest.raises(StorageError, match="status 'refunded' is unknown"):
            report(led, "model", source="charges")
    code, out, err = run(
        "report", "--by", "duration", "--since", "2026-06-01", "--ledger", url
    )  # the charges
    assert code != 0 and "Traceback" not in out + err
    [line] = [x for x in (out + err).splitlines() if x.strip()]
    assert "status 'refunded' is unknown" in line
