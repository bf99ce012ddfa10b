"""The text chart of ``kling-cost report`` folds empty days; exports and CSV write amounts in
one exact form (70, 2.5, 0.125), both backends."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal

from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from kling_cost.money import format_amount
from tests.helpers import FakeClock
from tests.ledger.conftest import ledger_url
from tests.reports.seeds import seed_glance

__all__ = ["ledger_url"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def seeded(url: str) -> str:
    clock = FakeClock()
    with open_ledger(url, clock=clock) as led:
        seed_glance(led, clock)
    return url


def test_report_chart_folds_runs_of_empty_days(ledger_url: str) -> None:
    url = seeded(ledger_url)
    code, out, err = run("report", "--since", "2026-05-17", "--until", "2026-06-15", "--ledger", url)
    assert code == 0, err
    chart = out[out.index("Daily usage of account in units") :].splitlines()
    assert chart[0] == "Daily usage of account in units (UTC; limit 40 units per day)"
    bars = chart[1:]
    assert [re.sub(r"^(  \d{4}-\d\d-\d\d) [█|┃ ]{41} ", r"\1 BAR ", line) for line in bars] == [
        "  2026-05-17 … 2026-06-02  17 days with no usage",
        "  2026-06-03 BAR 15 units",
        "  2026-06-04 … 2026-06-09  6 days with no usage",
        "  2026-06-10 BAR 5 units",
        "  2026-06-11 … 2026-06-13  3 days with no usage",
        "  2026-06-14 BAR 32.725 units",
        "  2026-06-15 BAR 25 units",
    ]
    assert "| 15 units" in bars[1]  # the daily limit's mark is still drawn on days with usage
    # A lone empty day keeps its own line; the chart covers the period asked for.
    code, out, _ = run("report", "--since", "2026-06-09", "--until", "2026-06-11", "--ledger", url)
    chart = out[out.index("Daily usage of account in units") :].splitlines()[1:]
    assert code == 0 and [line[:13] + line[54:] for line in chart] == [
        "  2026-06-09  0 units",
        "  2026-06-10  5 units",
        "  2026-06-11  0 units",
    ]
    # Nothing at all in the period: one line.
    code, out, _ = run("report", "--since", "2026-05-01", "--until", "2026-05-20", "--ledger", url)
    assert code == 0 and "  no usage in this period (20 days)" in out and "█" not in out
    # A period longer than the chart: its last 60 days, said in the title.
    code, out, _ = run("report", "--since", "2026-01-01", "--until", "2026-06-15", "--ledger", url)
    assert code == 0 and "(UTC; limit 40 units per day; the last 60 days of the period)" in out
    assert "  2026-04-17 … 2026-06-02  47 days with no usage" in out


def test_exports_and_csv_write_the_same_exact_amounts(ledger_url: str) -> None:
    url = seeded(ledger_url)
    code, jsonl, _ = run("export", "--format", "jsonl", "--ledger", url)
    assert code == 0
    lines = jsonl.splitlines()
    records = [json.loads(line, parse_float=Decimal) for line in lines]
    code, text, _ = run("export", "--format", "csv", "--ledger", url)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(records) == 12
    with open_ledger(url) as led:
        charges = led.charges()
    for line, record, row, charge in zip(lines, records, rows, charges, strict=True):
        for field, value in (
            ("credits", charge.actual),
            ("estimate", charge.estimate),
            ("overage", charge.overage),
        ):
            shown = format_amount(value)
            assert row[field] == shown, (field, row[field], shown)  # CSV: 70, 2.5, 0.125
            jsonl_text = f'"{field}": {shown}'  # JSONL: the same text
            assert jsonl_text + "," in line or line.endswith(jsonl_text + "}")
            assert record[field] == value
    assert {r["credits"] for r in rows} >= {"20", "2.5", "12.5", "0.125", "0.1", "0"}
    assert not any(re.search(r"\.\d*0$", r[f]) for r in rows for f in ("credits", "estimate", "overage"))
    # report --format csv writes amounts the same way; its JSON keeps three-decimal strings.
    code, text, _ = run(
        "report", "--by", "model", "--since", "2026-06-01", "--format", "csv", "--ledger", url
    )
    assert code == 0
    report_rows = {r["model"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (report_rows["kling-v2-1"]["actual"], report_rows["kling-v2-1"]["drift"]) == ("32.5", "2.5")
    assert report_rows["kling-v2-1"]["drift_pct"] == "8.33"
    assert (report_rows["kling-v1"]["actual"], report_rows["kling-v1"]["estimate"]) == ("0.225", "0.225")
    assert report_rows["kling-v1-6"]["refunded"] == "0"
    code, text, _ = run(
        "report", "--by", "model", "--since", "2026-06-01", "--format", "json", "--ledger", url
    )
    assert {r["model"]: r["actual"] for r in json.loads(text)["rows"]}["kling-v2-1"] == "32.500"
