"""Batch rows with a field we do not know (a typo would be silently dropped) are refused,
naming the field and the line, before anything is priced or reserved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost import ConfigurationError
from kling_cost.batch import read_batch
from kling_cost.cli import app
from kling_cost.ledger import open_ledger


def test_a_misspelt_jsonl_field_is_refused_naming_it_and_its_line(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text(
        json.dumps({"prompt": "fine", "model": "kling-v1", "audio": False, "aspect_ratio": "16:9"})
        + "\n"
        + json.dumps({"prompt": "typo", "mdoe": "pro", "durtion": 10})
        + "\n"
    )
    with pytest.raises(ConfigurationError) as info:
        read_batch(file)
    message = str(info.value)
    assert message.startswith(f"{file}:2: unknown fields 'mdoe' (did you mean 'mode'?)")
    assert "'durtion' (did you mean 'duration'?)" in message and "allowed: " in message


def test_an_unknown_csv_column_is_refused_naming_the_header(tmp_path: Path) -> None:
    file = tmp_path / "p.csv"
    file.write_text("prompt,mdoe\na fox,pro\n")
    with pytest.raises(ConfigurationError, match=r"p\.csv:1 \(header\): unknown field 'mdoe'"):
        read_batch(file)


def test_every_documented_row_field_is_accepted(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    row = {
        "prompt": "x",
        "negative_prompt": "y",
        "kind": "text2video",
        "model_name": "kling-v1",
        "mode": "std",
        "duration": 5,
        "sound": "off",
        "aspect_ratio": "16:9",
        "cfg_scale": 0.5,
        "camera_control": {"type": "simple"},
        "callback_url": "https://example.com/cb",
        "external_task_id": "row-1",
    }
    file.write_text(json.dumps(row) + "\n")
    [parsed] = read_batch(file)
    assert parsed.body["cfg_scale"] == 0.5 and parsed.key == "row-1"


def test_batch_run_with_a_misspelt_field_is_one_line_and_reserves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    monkeypatch.setenv("KLING_COST_LEDGER", url)
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "typo", "mdoe": "pro"}\n')
    result = CliRunner().invoke(app, ["batch", "run", str(file), "--yes"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "p.jsonl:1: unknown field 'mdoe' (did you mean 'mode'?)" in result.stderr
    with open_ledger(url) as ledger:
        assert ledger.reservations() == []
