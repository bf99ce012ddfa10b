from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_estimate_seed_example_json() -> None:
    code, out, _ = run(
        "estimate",
        "--catalog",
        "kling-app-credits",
        "--duration",
        "10",
        "--mode",
        "professional",
        "--audio",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert (data["amount"], data["unit"]) == ("200", "credits")


def test_estimate_api_units_json() -> None:
    code, out, _ = run(
        "estimate",
        "--catalog",
        "kling-api",
        "--model",
        "kling-v2-6",
        "--mode",
        "std",
        "--duration",
        "5",
        "--json",
    )
    data = json.loads(out)
    assert code == 0 and (data["amount"], data["usd"]) == ("1.5", "0.21")
    code, out, _ = run(
        "estimate",
        "--catalog",
        "kling-api",
        "--model",
        "kling-v2-6",
        "--mode",
        "pro",
        "--duration",
        "5",
        "--audio",
        "--json",
    )
    data = json.loads(out)
    assert (data["amount"], data["usd"]) == ("5", "0.7")


def test_estimate_table_output_and_count() -> None:
    code, out, _ = run("estimate", "--model", "kling-v2-6", "--count", "4")
    assert code == 0
    assert "1.5 units" in out and "6 units" in out


def test_pricing_show_all_lists_both_versions() -> None:
    code, out, _ = run("pricing", "show", "--all", "--json")
    assert code == 0
    prices = json.loads(out)["prices"]
    master = [p for p in prices if p["models"] == ["kling-v2-master"] and p["kind"] == "video"]
    assert {p["effective_from"] for p in master} == {"2024-09-19"}
    master_new = [
        p for p in prices if p["models"] and "kling-v2-master" in p["models"] and p["basis"] == "per_second"
    ]
    assert master_new and master_new[0]["effective_from"] == "2026-01-01"
    code, out, _ = run("pricing", "show", "--json")
    current = json.loads(out)["prices"]
    assert len(current) < len(prices)
    code, out, _ = run("pricing", "show", "--catalog", "kling-app-credits", "--json")
    assert code == 0 and "200" in [p["rate"] for p in json.loads(out)["prices"]]


def test_pricing_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('name="g"\nextends="kling-api"\n')
    code, out, _ = run("pricing", "validate", str(good))
    assert code == 0 and "OK: g" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["estimate", "--model", "kling-v9"], "model 'kling-v9' is not a Kling model"),
        (["estimate", "--model", "kling-v2-6", "--duration", "7"], "duration 7 is not offered"),
        (["estimate", "--kind", "image", "--n", "0"], "n 0 is not offered"),
        (["estimate", "--as-of", "yesterday"], "--as-of"),
        (["estimate", "--catalog", "missing.toml"], "neither a shipped catalog"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], fragment: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_broken_catalog_file_through_the_real_script(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('name="b"\nunit="units"\n[[prices]]\nkind="video"\namount=\n')
    for args in (["pricing", "validate", str(bad)], ["estimate", "--catalog", str(bad)]):
        proc = subprocess.run(
            [sys.executable, "-m", "kling_cost", *args], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"error: {bad}: not valid TOML")
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr
