"""The CLI on Kling's 2026 models: --resolution, --sound, new-standard paths, batch rows that
name the new standard's price fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost import ConfigurationError
from kling_cost.batch import read_batch
from kling_cost.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_issue_example() -> None:
    code, out, _ = run("estimate", "--model", "kling-3.0", "--resolution", "1080p", "--duration", "10")
    assert code == 0
    assert out.splitlines()[0] == "8 units (USD 1.12)  text2video kling-3.0 pro 10s"
    code, out, _ = run("estimate", "--model", "kling-v3", "--mode", "pro", "--duration", "10", "--json")
    assert json.loads(out)["amount"] == "8"


@pytest.mark.parametrize(
    ("args", "amount"),
    [
        (["--model", "kling-3.0", "--sound", "native", "--duration", "10"], "9"),
        (["--model", "kling-3.0", "--audio", "--sound", "native", "--duration", "10"], "9"),
        (["--model", "kling-3.0", "--sound", "off", "--duration", "10"], "6"),
        (["--kind", "/omni-video/kling-o1", "--sound", "original", "--video-input", "--duration", "10"], "9"),
        (["--kind", "/motion-control/kling-3.0", "--resolution", "1080p"], "36"),
        (["--kind", "motion-control", "--model", "kling-3.0", "--duration", "12"], "10.8"),
        (["--model", "kling-2.6", "--resolution", "1080p", "--audio", "--voice-control"], "6"),
        (["--model", "kling-3.0-turbo", "--duration", "3"], "2.4"),
        (["--kind", "omni-image", "--model", "kling-v3-omni", "--resolution", "4k", "--n", "2"], "32"),
        (["--kind", "avatar", "--mode", "pro", "--duration", "10"], "8"),
    ],
)
def test_estimate_new_fields(args: list[str], amount: str) -> None:
    code, out, err = run("estimate", *args, "--json")
    assert code == 0, err
    assert json.loads(out)["amount"] == amount


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--audio", "--sound", "off"], "--audio and --sound off disagree"),
        (["--sound", "nativ"], "sound 'nativ' is not offered"),
        (["--mode", "pro", "--resolution", "720p"], "disagree"),
        (["--model", "kling-2.6", "--resolution", "4k"], "mode 4k (4k) is not offered for kling-2.6"),
        (["--kind", "motion-control"], "motion-control needs a model"),
        (["--kind", "/motion-control/kling-3.0", "--model", "kling-2.6"], "disagree"),
        (["--kind", "/omni-video/kling-2.6"], "not served at /omni-video/"),
    ],
)
def test_estimate_refusals_are_one_line(args: list[str], words: str) -> None:
    code, _, err = run("estimate", *args)
    assert code != 0 and words in err and "Traceback" not in err


def test_pricing_show_has_the_new_match_fields() -> None:
    code, out, _ = run("pricing", "show", "--json")
    prices = json.loads(out)["prices"]
    omni = [p for p in prices if p["models"] and "kling-3.0-omni" in p["models"] and p["video_input"]]
    assert omni and {p["effective_from"] for p in omni} == {"2026-09-20"}
    assert any(p["resolutions"] == ["4k"] for p in prices)
    code, out, _ = run("pricing", "show", "--all")
    assert code == 0 and "USD per unit" in out


def test_batch_rows_name_new_standard_fields(tmp_path: Path) -> None:
    file = tmp_path / "rows.jsonl"
    rows = [
        {"prompt": "a", "model": "kling-v3", "resolution": "1080p", "duration": 10, "audio": "native"},
        {"prompt": "b", "model": "kling-v3", "resolution": "4k", "duration": 3, "multi_shot": "false"},
        {"prompt": "c", "kind": "image", "model": "kling-v3-omni", "resolution": "4k"},
        {"prompt": "d", "model": "kling-v3-omni", "kind": "omni-video", "audio": "original"},
    ]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    parsed = read_batch(file)
    assert parsed[0].body | {"external_task_id": None} == {
        "prompt": "a",
        "model_name": "kling-v3",
        "mode": "pro",
        "duration": "10",
        "sound": "on",
        "external_task_id": None,
    }
    assert (parsed[1].body["mode"], parsed[1].body["multi_shot"]) == ("4k", False)
    assert parsed[2].body["resolution"] == "4k" and "mode" not in parsed[2].body
    assert parsed[3].body["sound"] == "off"
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "migrate", "--ledger", ledger)[0] == 0
    code, out, err = run("batch", "plan", str(file), "--json", "--ledger", ledger)
    assert code == 0, err
    assert [i["amount"] for i in json.loads(out)["items"]] == ["12", "9", "16", "3"]


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"prompt": "a", "resolution": "8k"}, "resolution '8k' is not offered"),
        ({"prompt": "a", "mode": "std", "resolution": "1080p"}, "disagree"),
        ({"prompt": "a", "audio": "nativ"}, "sound/audio 'nativ' is not offered"),
        ({"prompt": "a", "multi_shot": "maybe"}, "multi_shot must be true or false"),
    ],
)
def test_batch_rows_refuse_bad_new_fields_naming_the_line(
    tmp_path: Path, row: dict[str, object], words: str
) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ConfigurationError, match=f"{file.name}:2: .*{words}"):
        read_batch(file)


def test_batch_plan_resolution_default(tmp_path: Path) -> None:
    file = tmp_path / "p.txt"
    file.write_text("a fox\na cat\n")
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "migrate", "--ledger", ledger)[0] == 0
    args = ("batch", "plan", str(file), "--model", "kling-3.0", "--resolution", "1080p", "--duration", "10")
    code, out, err = run(*args, "--json", "--ledger", ledger)
    assert code == 0, err
    assert json.loads(out)["total"] == "16"
