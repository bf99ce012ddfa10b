"""Batches on both API standards: how a row chooses its standard, and a mixed batch that
settles to the simulator's bill (the ledger's charges add up to Kling's billing listing, task
by task), on both ledger backends."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost import ConfigurationError
from kling_cost.batch import BatchRunner, read_batch
from tests.guard.conftest import World
from tests.guard.test_batch import ticking


@pytest.fixture
def twin() -> str:
    """Batches run on the sync guard: one run per test."""
    return "sync"


def _rows(tmp_path: Path, *rows: dict[str, Any]) -> Path:
    path = tmp_path / "shots.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_row_chooses_its_standard(tmp_path: Path) -> None:
    path = _rows(
        tmp_path,
        {"prompt": "a", "model": "kling-3.0", "resolution": "1080p", "duration": 10, "multi_shot": "false"},
        {"prompt": "b", "model": "kling-v3", "mode": "pro", "duration": 10},
        {"prompt": "c", "model": "kling-3.0", "standard": "legacy", "resolution": "1080p", "duration": 10},
        {"prompt": "d", "model": "kling-v2-6", "standard": "new", "duration": 5, "audio": "off"},
        {"prompt": "e", "kind": "/image-to-video/kling-2.6", "image": "https://e.x/f.png", "audio": "native"},
        {"prompt": "f", "model": "kling-3.0-turbo", "external_task_id": "turbo-1"},
    )
    rows = read_batch(path)
    assert [r.standard for r in rows] == ["new", "legacy", "legacy", "new", "new", "new"]
    assert [r.endpoint for r in rows] == [
        "/text-to-video/kling-3.0",
        "text2video",
        "text2video",
        "/text-to-video/kling-2.6",
        "/image-to-video/kling-2.6",
        "/text-to-video/kling-3.0-turbo",
    ]
    assert rows[0].body == {
        "prompt": "a",
        "settings": {"resolution": "1080p", "duration": 10, "multi_shot": False},
        "options": {"external_task_id": rows[0].key},
    }
    assert rows[2].body["model_name"] == "kling-v3" and rows[2].body["mode"] == "pro"
    assert rows[3].body["settings"] == {"duration": 5, "audio": "off"}
    assert rows[4].body["contents"] == [
        {"type": "prompt", "text": "e"},
        {"type": "first_frame", "url": "https://e.x/f.png"},
    ]
    assert rows[4].prompt == "e" and rows[5].key == "turbo-1"
    assert [r.key for r in read_batch(path)] == [r.key for r in rows]  # stable: re-runs resume


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"model": "kling-3.0-turbo", "standard": "legacy"}, "kling-3.0-turbo has no legacy endpoint"),
        ({"model": "kling-3.0", "negative_prompt": "blur"}, "negative_prompt is a legacy field"),
        ({"model": "kling-3.0", "kind": "image"}, "image has no new-standard endpoint"),
        ({"standard": "new"}, "the new standard needs a model"),
        ({"model": "kling-3.0", "standard": "newest"}, "standard 'newest' is not offered"),
        ({"model": "kling-3.0", "duration": "7.5"}, "duration '7.5' must be a whole number"),
        ({"kind": "/text-to-video/kling-3.0", "model": "kling-2.6"}, "disagree"),
    ],
)
def test_rows_the_new_standard_cannot_take_name_their_line(
    tmp_path: Path, row: dict[str, Any], message: str
) -> None:
    path = _rows(tmp_path, {"prompt": "ok"}, {"prompt": "x", **row})
    with pytest.raises(ConfigurationError, match=message) as info:
        read_batch(path)
    assert f"{path}:2:" in str(info.value)


def test_a_mixed_batch_settles_to_the_simulators_bill(any_world: World, tmp_path: Path) -> None:
    path = _rows(
        tmp_path,
        {"prompt": "new 3.0", "model": "kling-3.0", "resolution": "1080p", "duration": 10},
        {"prompt": "legacy 3.0", "model": "kling-v3", "mode": "pro", "duration": 10},
        {"prompt": "turbo", "model": "kling-3.0-turbo", "duration": 5},
        {"prompt": "legacy 2.6", "model": "kling-v2-6", "mode": "std", "duration": 5},
        {"prompt": "i2v", "kind": "image-to-video", "model": "kling-2.6", "image": "https://e.x/f.png",
         "resolution": "1080p", "duration": 5, "audio": "native"},
        {"prompt": "dance", "kind": "motion-control", "model": "kling-2.6", "image": "https://e.x/me.png",
         "video": "https://e.x/dance.mp4", "character_orientation": "image", "resolution": "1080p"},
        {"prompt": "new 3.0", "model": "kling-3.0", "resolution": "1080p", "duration": 10},  # a duplicate
    )  # fmt: skip
    rows = read_batch(path)
    with any_world.guard() as guard:
        runner = BatchRunner(guard, rows, concurrency=3, poll=0.01, backoff=0.01)  # type: ignore[arg-type]
        with ticking(any_world):
            summary = runner.run()
    assert summary.to_dict()["done"] == 6 and summary.to_dict()["cached"] == 1  # type: ignore[attr-defined]
    charged = {c.task_id: c.actual for c in any_world.ledger.charges() if c.status == "succeeded"}
    with any_world.kling() as kling:
        bill = {r.task_id: r.deduction_amount for page in kling.billing_package_pages() for r in page.result}
        assert [r for page in kling.billing_balance_pages() for r in page.result] == []
    assert charged == bill  # task by task
    assert sum(charged.values()) == sum(bill.values()) == Decimal("34.5")  # 8 + 8 + 4 + 1.5 + 5 + 8
    standards = {t.standard for t in any_world.tasks}
    assert standards == {"new", "legacy"}
