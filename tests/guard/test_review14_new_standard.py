"""Review of issue 14: the guard on the new standard where money could leak (both ledger
backends, both twins)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import pytest

from kling_cost.errors import MissingCredentials
from kling_cost.guard import AsyncCostAwareClient, CostAwareClient
from kling_cost.kling import AsyncKlingClient, KlingClient, RetryPolicy
from tests.guard.conftest import Blocking, World
from tests.servers import AK, SK

PROMPT = "a red fox in snow"


def _aksk_guard(world: World) -> CostAwareClient:
    """A guard whose Kling client has the access/secret key only (no API key)."""
    options: dict[str, Any] = {"base_url": world.url, "retry": RetryPolicy(base_delay=0)}
    if world.twin == "sync":
        return CostAwareClient(KlingClient(AK, SK, **options), world.ledger, scopes=["project:film"])
    assert world.portal is not None
    guard = AsyncCostAwareClient(AsyncKlingClient(AK, SK, **options), world.ledger, scopes=["project:film"])
    return cast(CostAwareClient, Blocking(guard, world.portal))


def test_a_new_standard_create_without_an_api_key_holds_nothing(
    any_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only AK/SK configured: refused before any hold and any request, naming the create (the
    hold used to stay reserved until its lease ran out, blocking the budget)."""
    monkeypatch.delenv("KLING_API_KEY", raising=False)
    any_world.ledger.set_budget("project:film", 8)
    with _aksk_guard(any_world) as guard:
        with pytest.raises(
            MissingCredentials, match=r"POST /text-to-video/kling-3\.0 is on Kling's new standard"
        ):
            guard.new_text_to_video("kling-3.0", PROMPT, resolution="1080p", duration=10)
        with pytest.raises(MissingCredentials):
            guard.create("/text-to-video/kling-3.0", {"prompt": PROMPT, "settings": {"duration": 5}})
        legacy = guard.text_to_video(PROMPT, model_name="kling-v3", mode="pro", duration="10")  # legacy: fine
    assert any_world.tasks and [t.task_id for t in any_world.tasks] == [legacy.task_id]
    [held] = any_world.ledger.reservations()
    assert held.task_id == legacy.task_id and held.amount == Decimal(8)
    usage = any_world.ledger.usage("project:film")
    assert (usage.used, usage.reserved) == (Decimal(0), Decimal(8))


def test_a_lip_sync_hinted_with_its_video_length_in_ms_over_1000_is_held_per_started_5_s(
    any_world: World,
) -> None:
    """The docstring's hint (identify-face's end_time 5040 ms / 1000 = 5.04 s) was refused
    as "not a whole number"; 5.04 s is two started 5 s blocks: 1 unit held."""
    with any_world.guard() as guard:
        faces = guard.identify_face(video_url="https://e.x/talk.mp4")
        end = faces.face_data[0].end_time
        choice = {
            "face_id": "0",
            "sound_file": "https://e.x/v.mp3",
            "sound_start_time": 0,
            "sound_end_time": 4000,
        }
        task = guard.advanced_lip_sync(faces.session_id, [choice], hints={"duration": (end + 40) / 1000})
        [held] = any_world.ledger.reservations()
        assert (held.amount, held.task_id) == (Decimal(1), task.task_id)
        guard.lip_sync({"video_url": "https://e.x/talk.mp4", "mode": "audio2video", "audio_url": "https://e.x/a.mp3"},
                       hints={"duration": "10.000"})  # fmt: skip
        held_10 = [r for r in any_world.ledger.reservations() if r.id != held.id]
        assert [r.amount for r in held_10] == [Decimal(1)]
        any_world.finish()
        guard.wait(task, poll=0.01)
    [charge] = [c for c in any_world.ledger.charges() if c.task_id == task.task_id]
    assert charge.actual == Decimal("0.5")  # what Kling (the simulator: a 5 s video) charged
