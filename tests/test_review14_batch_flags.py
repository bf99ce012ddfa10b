"""Review of issue 14: a batch row's yes/no fields of the new standard are read, never guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kling_cost import ConfigurationError
from kling_cost.batch import read_batch


@pytest.mark.parametrize("value", ["maybe", "ture", "2", "nope"])
def test_a_csv_multi_shot_or_watermark_that_is_no_yes_or_no_is_refused_naming_its_line(
    tmp_path: Path, value: str
) -> None:
    """``multi_shot: yes`` used to go out as false (only the text "true" was read as true)."""
    for field in ("multi_shot", "watermark"):
        path = tmp_path / "p.csv"
        path.write_text(f"prompt,model_name,duration,{field}\na fox,kling-3.0,10,{value}\n")
        with pytest.raises(ConfigurationError, match=rf"p\.csv:2: {field} '{value}' is not offered"):
            read_batch(path)


@pytest.mark.parametrize(
    ("value", "flag"), [("yes", True), ("1", True), ("TRUE", True), ("no", False), ("0", False)]
)
def test_csv_yes_and_no_are_read_as_such(tmp_path: Path, value: str, flag: bool) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"prompt,model_name,duration,multi_shot,watermark\na fox,kling-3.0,10,{value},{value}\n")
    [row] = read_batch(path)
    assert row.body["settings"]["multi_shot"] is flag
    assert row.body["options"]["watermark_info"] == {"enabled": flag}


def test_a_jsonl_multi_shot_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "model_name": "kling-3.0", "duration": 10}\n'
                    '{"prompt": "b", "model_name": "kling-3.0", "duration": 10, "multi_shot": [true]}\n')  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"p\.jsonl:2: multi_shot \[True\] is not offered"):
        read_batch(path)


@pytest.mark.parametrize("model", ['["kling-v2-6"]', '{"a": 1}', "5"])
def test_a_jsonl_model_that_is_not_text_is_refused_naming_its_line(tmp_path: Path, model: str) -> None:
    """(Found by review: a list was an internal TypeError, unhashable type.)"""
    path = tmp_path / "p.jsonl"
    path.write_text(f'{{"prompt": "a", "model": {model}}}\n')
    with pytest.raises(ConfigurationError, match=r"p\.jsonl:1: model must be a model name \(text\)"):
        read_batch(path)
