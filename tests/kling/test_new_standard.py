"""The client on Kling's new standard, against the simulator over real HTTP: creates with the
model in the path, ``GET /tasks`` (batched), ``POST /tasks`` and the billing listings as cursor
pages, the API key only, regions, the two-step lip-sync and the legacy balance deduction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest

from kling_cost.errors import ConfigurationError, InvalidRequest, MissingCredentials, PricingError
from kling_cost.kling import (
    AsyncKlingClient,
    CashCharge,
    KlingClient,
    KlingTask,
    NewStandardRequest,
    NewStandardTask,
    RetryPolicy,
    TextToVideoRequest,
    parse_callback,
)
from tests.kling.conftest import Running, start
from tests.servers import AK, API_KEY, SK, Receiver, serve


def client(running: Running, **kwargs: Any) -> KlingClient:
    kwargs.setdefault("retry", RetryPolicy(base_delay=0))
    return KlingClient(AK, SK, api_key=API_KEY, base_url=running.url, **kwargs)


@contextmanager
def counting(running: Running, **kwargs: Any) -> Iterator[tuple[KlingClient, list[httpx.Request]]]:
    """A client whose every HTTP request is recorded."""
    seen: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [seen.append]}) as http:
        yield client(running, http_client=http, **kwargs), seen


@pytest.fixture
def cash() -> Iterator[Running]:
    """A simulator whose account also has a cash balance (USD 100, 20 % off list prices)."""
    yield from start(balance="100", balance_discount="0.2")


def test_text_to_video_lifecycle(running: Running) -> None:
    with client(running) as kling:
        task = kling.new_text_to_video("kling-3.0", "a red fox in snow", resolution="1080p", duration=10)
        assert isinstance(task, NewStandardTask) and task.status == "submitted"
        assert task.endpoint == "/text-to-video/kling-3.0" and task.external_task_id is None
        running.advance(10)
        done = kling.wait(task, poll=0.01)
        by_id = kling.get_task("/tasks", task.id)
        by_path = kling.get_task("/text-to-video/kling-3.0", task.id)
    assert done.succeeded and done.done and done.task_status == "succeeded"
    assert done.billing[0].charge_type == "unit" and done.units == Decimal(8) == done.charged
    assert isinstance(done.units, Decimal) and done.videos[0].duration == "10"
    assert by_id.model_dump() == by_path.model_dump() == done.model_dump()
    assert running.sim.state.packs["video"].remaining == Decimal(992)


@pytest.mark.parametrize(
    ("call", "units"),
    [
        (lambda k: k.new_text_to_video("kling-3.0-turbo", "a fox", duration=5), "4"),  # 0.8/s, audio on
        (
            lambda k: k.new_image_to_video(
                "kling-2.6", "https://e.x/fox.png", "turn", resolution="1080p", duration=5, audio="native"
            ),
            "5",
        ),
        (
            lambda k: k.omni_video(
                "kling-o1",
                [{"type": "feature_video", "url": "https://e.x/clip.mp4"}],
                "restyle",
                resolution="1080p",
                duration=5,
            ),
            "6",
        ),
        (
            lambda k: k.motion_control(
                "kling-3.0", "https://e.x/me.png", "https://e.x/dance.mp4", character_orientation="image"
            ),
            "9",  # billed on the output: 10.04 s -> 10 s at 0.9/s (720p)
        ),
    ],
    ids=["t2v-turbo", "i2v", "omni", "motion"],
)
def test_every_new_family(running: Running, call: Any, units: str) -> None:
    with client(running) as kling:
        task = call(kling)
        running.advance(10)
        done = kling.wait(task, poll=0.01)
    assert done.succeeded and done.units == Decimal(units)


def test_options_and_settings_are_sent_as_kling_spells_them(running: Running) -> None:
    with counting(running) as (kling, seen):
        kling.new_text_to_video(
            "kling-3.0", "a fox", resolution="4k", duration=3, multi_shot=False, watermark=True,
            external_task_id="opts-1", callback_url="http://127.0.0.1:9/hook",
        )  # fmt: skip
    body = json.loads(seen[0].content)
    assert body == {
        "prompt": "a fox",
        "settings": {"resolution": "4k", "duration": 3, "multi_shot": False},
        "options": {
            "external_task_id": "opts-1",
            "callback_url": "http://127.0.0.1:9/hook",
            "watermark_info": {"enabled": True},
        },
    }
    assert seen[0].url.path == "/text-to-video/kling-3.0"
    assert seen[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_bad_bodies_are_refused_before_any_request(running: Running) -> None:
    with counting(running) as (kling, seen):
        with pytest.raises(PricingError, match="JSON integer"):
            kling.create("/text-to-video/kling-3.0", {"prompt": "x", "settings": {"duration": "10"}})
        with pytest.raises(PricingError, match="duration 7 is not offered"):
            kling.new_text_to_video("kling-2.6", "x", duration=7)
        with pytest.raises(PricingError, match="not served at /omni-video/"):
            kling.omni_video("kling-3.0", prompt="x")
        with pytest.raises(ConfigurationError, match="legacy field"):
            kling.new_text_to_video("kling-3.0", "x", mode="pro")
        with pytest.raises(ConfigurationError, match="NewStandardRequest"):
            kling.create("/text-to-video/kling-3.0", TextToVideoRequest(prompt="x"))
        with pytest.raises(ConfigurationError, match="model in it"):
            kling.create("text2video", NewStandardRequest(prompt="x"))
        with pytest.raises(ConfigurationError, match=r"/motion-control/\{model\}"):
            kling.create("motion-control", {"model_name": "kling-v3"})
    assert seen == []


def test_ak_sk_alone_cannot_call_the_new_standard(running: Running) -> None:
    seen: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks={"request": [seen.append]}) as http,
        KlingClient(AK, SK, base_url=running.url, http_client=http) as kling,
    ):
        for call in (
            lambda: kling.new_text_to_video("kling-3.0", "a fox"),
            lambda: kling.get_tasks(["1"]),
            lambda: kling.get_task("/tasks", "1"),
            lambda: next(iter(kling.task_pages())),
            lambda: next(iter(kling.billing_package_pages())),
            lambda: next(iter(kling.billing_balance_pages())),
        ):
            with pytest.raises(MissingCredentials, match="API key only") as info:
                call()
            assert isinstance(info.value, ConfigurationError) and info.value.missing == ("KLING_API_KEY",)
        assert seen == []  # refused before any request
        legacy = kling.text_to_video("a fox", model_name="kling-v3", mode="pro", duration=10)
    assert isinstance(legacy, KlingTask) and seen[0].headers["authorization"] != f"Bearer {API_KEY}"


def test_an_api_key_alone_calls_both_standards(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_API_KEY", API_KEY)
    with KlingClient(base_url=running.url) as kling:
        assert isinstance(kling.text_to_video("a fox"), KlingTask)
        assert isinstance(kling.new_text_to_video("kling-2.5-turbo", "a fox"), NewStandardTask)
    with KlingClient(AK, SK, base_url=running.url) as kling:  # AK/SK for legacy, the env key for new
        assert isinstance(kling.new_text_to_video("kling-2.5-turbo", "a fox"), NewStandardTask)


def test_regions_and_the_base_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with KlingClient(api_key="k") as kling:
        assert kling.base_url == "https://api-singapore.klingai.com"
    with KlingClient(api_key="k", region="china") as kling:
        assert kling.base_url == "https://api-beijing.klingai.com"
    monkeypatch.setenv("KLING_BASE_URL", "http://127.0.0.1:8790/")
    with KlingClient(api_key="k", region="china") as kling:
        assert kling.base_url == "http://127.0.0.1:8790"  # the setting overrides the region
    with KlingClient(api_key="k", base_url="https://api.klingai.com") as kling:
        assert kling.base_url == "https://api.klingai.com"  # and the argument overrides both


def test_unknown_ids_and_batched_queries(running: Running) -> None:
    with counting(running) as (kling, seen):
        made = [
            kling.new_text_to_video("kling-2.5-turbo", f"shot {i}", external_task_id=f"q-{i}")
            for i in range(5)
        ]
        with pytest.raises(InvalidRequest) as info:
            kling.get_task("/tasks", external_task_id="nobody")
        assert info.value.code == 1203 and info.value.http_status == 404
        del seen[:]
        wanted = [f"q-{i}" for i in range(5)] + ["nobody", "q-0"]
        found = kling.get_tasks(external_task_ids=wanted, per_call=2)
        by_ids = kling.get_tasks([t.id for t in made])
    assert len(seen) == 3 + 1  # six distinct ids two at a time, then five ids in one call
    assert [t.external_id for t in found] == [f"q-{i}" for i in range(5)]
    assert [t.id for t in by_ids] == [t.id for t in made]
    assert all(r.url.params.get("external_task_ids") for r in seen[:3])
    with client(running) as kling, pytest.raises(ConfigurationError, match="exactly one"):
        kling.get_tasks()


def test_task_pages_walk_the_cursor(running: Running) -> None:
    with client(running) as kling:
        for i in range(5):
            kling.new_text_to_video("kling-2.5-turbo", f"shot {i}", external_task_id=f"p-{i}")
            running.advance(1)
        running.advance(10)
        pages = list(kling.task_pages(limit=2))
        succeeded = [
            t.external_id
            for p in kling.task_pages(status=["succeeded"], product_type="video")
            for t in p.result
        ]
        none = list(kling.task_pages(status=["failed"]))
        resumed = list(kling.task_pages(cursor=pages[0].next_cursor))
    assert [p.count for p in pages] == [2, 2, 1] and [p.has_more for p in pages] == [True, True, False]
    listed = [t.external_id for p in pages for t in p.result]
    assert listed == [f"p-{i}" for i in reversed(range(5))] == succeeded  # newest first
    assert none[0].result == [] and len(none) == 1
    assert [t.external_id for p in resumed for t in p.result] == listed[2:]
    with client(running) as kling, pytest.raises(ConfigurationError, match="limit"):
        kling.task_pages(limit=501)


def test_billing_listings_and_cash(cash: Running) -> None:
    with client(cash) as kling:
        kling.new_text_to_video("kling-3.0", "paid by the pack", resolution="1080p", duration=10)
        cash.advance(10)
        cash.sim.state.set_remaining("video", Decimal(0))
        body = [{"type": "feature_video", "url": "https://e.x/clip.mp4"}]
        paid = kling.omni_video(
            "kling-o1", body, "watercolour", resolution="1080p", duration=5, audio="original"
        )
        cash.advance(10)
        done = kling.wait(paid, poll=0.01)
        legacy = kling.text_to_video("a fox", model_name="kling-v3", mode="pro", duration=10)
        cash.advance(10)
        legacy_done = kling.wait(legacy, poll=0.01)
        package = [row for page in kling.billing_package_pages(product_type="video") for row in page.result]
        balance = [row for page in kling.billing_balance_pages(limit=1) for row in page.result]
    [entry] = done.billing
    assert isinstance(entry, CashCharge) and done.units == 0 and done.charged == 0
    assert (entry.amount, entry.currency, entry.list_price) == (Decimal("0.672"), "USD", Decimal("0.84"))
    assert [(r.model_name, r.deduction_amount) for r in package] == [("kling-3.0", Decimal(8))]
    assert [(r.deduction_amount, r.list_price, r.currency) for r in balance] == [
        (Decimal("0.896"), Decimal("1.12"), "USD"),  # newest first: the legacy kling-v3 task
        (Decimal("0.672"), Decimal("0.84"), "USD"),
    ]
    assert legacy_done.final_unit_deduction == 0 and legacy_done.paid_in_cash and legacy_done.charged == 0
    assert legacy_done.final_balance_deduction is not None
    assert legacy_done.final_balance_deduction.quota == Decimal("0.896")


def test_two_step_lip_sync(running: Running) -> None:
    with client(running) as kling:
        faces = kling.identify_face(video_url="https://e.x/talk.mp4")
        [face] = faces.face_data
        task = kling.advanced_lip_sync(
            faces.session_id,
            [
                {
                    "face_id": face.face_id,
                    "sound_file": "https://e.x/voice.mp3",
                    "sound_start_time": 0,
                    "sound_end_time": 4000,
                }
            ],
            external_task_id="ls-2",
        )
        running.advance(10)
        done = kling.wait(task, poll=0.01)
        with pytest.raises(PricingError, match="exactly one of audio_id and sound_file"):
            kling.advanced_lip_sync(faces.session_id, [{"face_id": "0"}])
        with pytest.raises(PricingError, match="video_id or video_url is required"):
            kling.identify_face()
    assert isinstance(done, KlingTask) and done.endpoint == "advanced-lip-sync"
    assert done.final_unit_deduction == Decimal("0.5") and done.external_task_id == "ls-2"


def test_a_retried_create_finds_its_task_by_external_id(running: Running) -> None:
    with client(running) as kling:
        first = kling.new_text_to_video("kling-3.0", "a fox", external_task_id="dup-1")
        with pytest.raises(InvalidRequest, match="already exists"):
            kling.new_text_to_video("kling-3.0", "a fox", external_task_id="dup-1")
        running.sim.state.inject(5000, times=1)
        again = kling.new_text_to_video("kling-3.0", "a fox", external_task_id="dup-1")
    assert again.id == first.id and len(running.sim.state.tasks) == 1


def test_new_standard_callbacks_are_bare_task_objects() -> None:
    hooks = Receiver()
    for running in start(task_seconds=2):
        with serve(hooks.app()) as hook_base, client(running) as kling:
            kling.new_text_to_video("kling-2.5-turbo", "a boat", callback_url=hook_base + "/hook")
            running.advance(2)
            calls = hooks.wait_for(3)
    tasks = [parse_callback(body) for _, body in calls]
    assert all(isinstance(t, NewStandardTask) for t in tasks)
    assert [t.task_status for t in tasks] == ["submitted", "processing", "succeeded"]
    assert tasks[-1].charged == Decimal("1.5")


@pytest.mark.anyio
async def test_the_async_twin_speaks_the_new_standard(running: Running) -> None:
    async with AsyncKlingClient(
        AK, SK, api_key=API_KEY, base_url=running.url, retry=RetryPolicy(base_delay=0)
    ) as kling:
        task = await kling.new_text_to_video("kling-3.0", "a fox", resolution="1080p", duration=10)
        running.advance(10)
        done = await kling.wait(task, poll=0.01)
        [again] = await kling.get_tasks([task.id])
        pages = [page async for page in kling.task_pages(limit=1)]
        rows = [row async for page in kling.billing_package_pages() for row in page.result]
    assert done.units == again.units == Decimal(8) == rows[0].deduction_amount
    assert [t.id for p in pages for t in p.result] == [task.id]


def test_a_legacy_field_in_a_new_body_is_refused_naming_it(running: Running) -> None:
    with counting(running) as (kling, seen):
        for field, value in (("model_name", "kling-v3"), ("duration", "10"), ("external_task_id", "top")):
            with pytest.raises(PricingError, match=f"{field} is not a field of a new-standard body") as info:
                kling.create("/text-to-video/kling-3.0", {"prompt": "a fox", field: value})
            assert info.value.field == field
    assert seen == []
