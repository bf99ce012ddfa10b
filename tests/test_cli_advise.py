"""``advise`` and ``batch plan`` with the app's credits catalog: every saving in its unit, no
USD column without USD rates, and no "would cost 0" for an extension the catalog does not price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.advisor import advise
from kling_cost.cli import app
from kling_cost.ledger import open_ledger


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.stdout, result.stderr


def header(out: str) -> list[str]:
    line = next(row for row in out.splitlines() if row.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def test_advise_with_the_credits_catalog_never_prices_an_extension_at_0() -> None:
    code, out, err = run(
        "advise",
        "--catalog",
        "kling-app-credits",
        "--mode",
        "pro",
        "--duration",
        "10",
        "--count",
        "40",
        "--json",
    )
    assert code == 0, err
    advice = {a["strategy"]: a for a in json.loads(out)}
    later = advice["5s clips, extend later"]
    assert (later["saving"], later["unit"]) == ("1400", "credits")
    assert "would cost 0" not in later["note"]
    assert later["note"] == (
        "40 clips; catalog kling-app-credits has no video-extend price, so extending later is not priced"
    )
    assert all(a["unit"] == "credits" and a["saving_usd"] is None for a in advice.values())
    code, out, _ = run(
        "advise", "--catalog", "kling-app-credits", "--mode", "pro", "--duration", "10", "--count", "40"
    )
    assert code == 0 and header(out) == ["strategy", "how", "saving", "%", "note"]  # no empty USD column
    assert "1400 credits" in out and "0 credits" in out and "would cost 0" not in out


def test_advise_with_the_api_catalog_prices_the_extension_in_its_unit() -> None:
    code, out, _ = run(
        "advise", "--model", "kling-v1-6", "--mode", "pro", "--duration", "10", "--count", "4", "--json"
    )
    later = next(a for a in json.loads(out) if a["strategy"] == "5s clips, extend later")
    assert code == 0 and later["note"] == "4 clips; extending every one of them later would cost 14 units"
    assert (later["saving"], later["unit"], later["saving_usd"]) == ("14", "units", "1.96")
    code, out, _ = run("advise", "--model", "kling-v1-6", "--mode", "pro", "--duration", "10", "--count", "1")
    assert code == 0 and header(out) == ["strategy", "how", "saving", "%", "USD", "note"]
    assert "extending it later would cost 3.5 units" in out and "3.5 units" in out


def test_advise_when_only_some_clips_have_an_extend_price() -> None:
    requests = [
        {"kind": "video", "model": "kling-v1-6", "mode": "pro", "duration": 10},
        {"kind": "video", "model": "kling-v2-1", "mode": "pro", "duration": 10},
    ]
    (later,) = [a for a in advise(requests) if a.strategy == "5s clips, extend later"]
    assert later.note == (
        "2 clips; extending the 1 the catalog prices later would cost 3.5 units "
        "(catalog kling-api has no video-extend price for the other 1)"
    )


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    ledger = f"sqlite:///{tmp_path / 'a.db'}"
    open_ledger(ledger).close()
    monkeypatch.setenv("KLING_COST_LEDGER", ledger)
    return ledger


def test_batch_plan_shows_usd_saved_only_with_usd_rates(url: str, tmp_path: Path) -> None:
    file = tmp_path / "p.txt"
    file.write_text("one\ntwo\n")
    code, out, err = run(
        "batch", "plan", str(file), "--catalog", "kling-app-credits", "--mode", "pro", "--duration", "10"
    )
    assert code == 0, err
    table = out[out.index("Cheaper alternatives (in credits)") :]
    assert header(table) == ["change", "total", "saving", "%"]
    assert "USD" not in out
    code, out, _ = run("batch", "plan", str(file), "--mode", "pro", "--duration", "10")
    table = out[out.index("Cheaper alternatives (in units)") :]
    assert code == 0 and header(table) == ["change", "total", "saving", "USD saved", "%"]
