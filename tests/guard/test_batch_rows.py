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


# Found by an outside review: batch files a new user really has, read wrongly.


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.csv", "prompt,mode\na fox,pro\n"),  # Excel's "CSV UTF-8"
        ("p.jsonl", '{"prompt": "a fox", "mode": "pro"}\n'),
        ("p.json", '[{"prompt": "a fox", "mode": "pro"}]'),
    ],
)
def test_a_byte_order_mark_is_ignored_in_structured_files(tmp_path: Path, name: str, content: str) -> None:
    file = tmp_path / name
    file.write_bytes("\ufeff".encode() + content.encode())
    (row,) = read_batch(file)
    assert row.prompt == "a fox" and row.body["mode"] == "pro"


@pytest.mark.parametrize("name", ["rows.json", "rows.ndjson"])
def test_json_and_ndjson_files_are_rows_not_prompts(tmp_path: Path, name: str) -> None:
    rows = [{"prompt": "a fox", "mode": "pro", "duration": 10}, {"prompt": "a bird", "mode": "pro"}]
    file = tmp_path / name
    if name.endswith(".ndjson"):
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        file.write_text(json.dumps(rows, indent=2))
    got = read_batch(file)
    assert [(r.prompt, r.body["mode"]) for r in got] == [("a fox", "pro"), ("a bird", "pro")]
    assert got[0].body["duration"] == "10"


def test_a_json_row_in_a_prompt_file_is_refused_not_sent_as_a_prompt(tmp_path: Path) -> None:
    file = tmp_path / "p.txt"
    file.write_text('a fox\n{"prompt": "a bird", "mode": "pro"}\n{curly braces in a prompt}\n')
    with pytest.raises(ConfigurationError, match=r"p\.txt:2: this line is a JSON object.*\.jsonl"):
        read_batch(file)
    file.write_text("a fox\n{curly braces in a prompt}\n")  # not JSON: a prompt like any other
    assert [r.prompt for r in read_batch(file)] == ["a fox", "{curly braces in a prompt}"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"prompt": "x", "aspect_ratio": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested too deeply"),
        ('{"prompt": "x", "n": ' + "9" * 5000 + "}\n", "not valid JSON"),
        ('{"prompt": "x"}\n[1, 2]\n', "p.jsonl:2: each line must be a JSON object"),
    ],
    ids=["deep", "huge-int", "not-object"],
)
def test_hostile_jsonl_is_a_configuration_error(tmp_path: Path, content: str, words: str) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text(content)
    with pytest.raises(ConfigurationError, match=words):
        read_batch(file)


def test_a_json_file_that_is_not_an_array_of_objects_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "p.json"
    file.write_text('{"prompt": "x"}')
    with pytest.raises(ConfigurationError, match="array of row objects"):
        read_batch(file)
    file.write_text('[{"prompt": "x"}, "y"]')
    with pytest.raises(ConfigurationError, match="item 2: each item must be a JSON object"):
        read_batch(file)


def test_a_csv_row_with_more_cells_than_the_header_is_refused(tmp_path: Path) -> None:
    # An unquoted comma split the prompt: the rest was dropped silently and the video paid for.
    file = tmp_path / "p.csv"
    file.write_text("prompt\na fox, running through deep snow at dawn\n")
    with pytest.raises(ConfigurationError, match=r"p\.csv:2: 2 cells but the header names 1; quote"):
        read_batch(file)
    file.write_text('prompt\n"a fox, running through deep snow at dawn"\n')
    assert [r.prompt for r in read_batch(file)] == ["a fox, running through deep snow at dawn"]


def test_batch_plan_of_a_deep_jsonl_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "x", "aspect_ratio": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = CliRunner().invoke(
        app, ["batch", "plan", str(file), "--ledger", f"sqlite:///{tmp_path / 'l.db'}"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
