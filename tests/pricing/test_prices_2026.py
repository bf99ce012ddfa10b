"""Every row of Kling's 2026 price table (KLING_API.md, addendum), through every way in:
``estimate()`` with the new id and the legacy id, and ``PriceRequest.from_kling`` on a
new-standard body and on a legacy body."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from kling_cost import PricingError, estimate
from kling_cost.pricing import PriceRequest
from kling_cost.pricing.standard import MOTION_CONTROL_MAX_SECONDS

NEW_PRICES = date(2026, 9, 20)
"""The date of the 2026 entries: the addendum's docs snapshot."""
MODES = {"720p": "std", "1080p": "pro", "4k": "4k"}
SECONDS = 10


@dataclass(frozen=True)
class Row:
    """One cell of the table: ``rate`` units per second."""

    family: str  # text-to-video, image-to-video, omni-video, motion-control
    new_id: str
    legacy_id: str | None
    resolution: str
    rate: str
    audio: bool = False
    video_input: bool = False
    voice_control: bool = False

    @property
    def id(self) -> str:
        flags = [f for f, on in (("audio", self.audio), ("video", self.video_input)) if on]
        flags += ["voice"] if self.voice_control else []
        return "-".join([self.family.split("-")[0], self.new_id, self.resolution, *flags])


def rows(family: str, new: str, legacy: str | None, rates: dict[str, str], **flags: bool) -> list[Row]:
    return [Row(family, new, legacy, res, rate, **flags) for res, rate in rates.items()]


TABLE: list[Row] = [
    *rows("text-to-video", "kling-3.0-turbo", None, {"720p": "0.8", "1080p": "1.0"}, audio=True),
    *rows("text-to-video", "kling-3.0", "kling-v3", {"720p": "0.6", "1080p": "0.8", "4k": "3.0"}),
    *rows("text-to-video", "kling-3.0", "kling-v3", {"720p": "0.9", "1080p": "1.2", "4k": "3.0"}, audio=True),
    *rows("motion-control", "kling-3.0", "kling-v3", {"720p": "0.9", "1080p": "1.2"}),
    *rows("omni-video", "kling-3.0-omni", "kling-v3-omni", {"720p": "0.6", "1080p": "0.8", "4k": "3.0"}),
    *rows(
        "omni-video",
        "kling-3.0-omni",
        "kling-v3-omni",
        {"720p": "0.8", "1080p": "1.0", "4k": "3.0"},
        audio=True,
    ),
    *rows(
        "omni-video",
        "kling-3.0-omni",
        "kling-v3-omni",
        {"720p": "0.9", "1080p": "1.2", "4k": "3.0"},
        video_input=True,
    ),
    *rows(
        "omni-video",
        "kling-3.0-omni",
        "kling-v3-omni",
        {"720p": "0.9", "1080p": "1.2", "4k": "3.0"},
        video_input=True,
        audio=True,
    ),
    *rows("omni-video", "kling-o1", "kling-video-o1", {"720p": "0.6", "1080p": "0.8"}),
    *rows("omni-video", "kling-o1", "kling-video-o1", {"720p": "0.9", "1080p": "1.2"}, video_input=True),
    *rows("text-to-video", "kling-2.6", "kling-v2-6", {"720p": "0.3", "1080p": "0.5"}),
    *rows("text-to-video", "kling-2.6", "kling-v2-6", {"1080p": "1.0"}, audio=True),
    *rows("image-to-video", "kling-2.6", "kling-v2-6", {"1080p": "1.2"}, audio=True, voice_control=True),
    *rows("motion-control", "kling-2.6", "kling-v2-6", {"720p": "0.5", "1080p": "0.8"}),
    *rows("text-to-video", "kling-2.5-turbo", "kling-v2-5-turbo", {"720p": "0.3", "1080p": "0.5"}),
    *rows("image-to-video", "kling-2.5-turbo", "kling-v2-5-turbo", {"720p": "0.3", "1080p": "0.5"}),
]
ENDPOINT = {
    "text-to-video": "text2video",
    "image-to-video": "image2video",
    "omni-video": "omni-video",
    "motion-control": "motion-control",
}


def expected(row: Row, seconds: int = SECONDS) -> Decimal:
    return Decimal(row.rate) * seconds


def fields(row: Row, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": ENDPOINT[row.family], "model": model, "audio": row.audio}
    out |= {"video_input": row.video_input, "voice_control": row.voice_control}
    if row.family != "motion-control":
        out["duration"] = SECONDS
    return out


def new_body(row: Row) -> dict[str, Any]:
    """The body Kling's new standard takes for this row at ``/{family}/{new_id}``."""
    settings: dict[str, Any] = {"resolution": row.resolution}
    if row.family != "motion-control":
        settings["duration"] = SECONDS
    if row.new_id != "kling-3.0-turbo" and row.family != "motion-control":
        if row.new_id in ("kling-3.0", "kling-2.6", "kling-3.0-omni"):
            settings["audio"] = "native" if row.audio else "off"
        elif row.video_input:
            settings["audio"] = "original"  # o1 keeps the input video's sound: not generated
    options = {"external_task_id": f"t-{row.id}", "callback_url": "https://example.com/cb"}
    if row.family == "text-to-video":
        return {"prompt": "a fox in snow", "settings": settings, "options": options}
    contents: list[dict[str, Any]] = [{"type": "prompt", "text": "a fox in snow"}]
    if row.family == "image-to-video":
        contents.append({"type": "first_frame", "url": "https://example.com/f.png"})
    if row.voice_control:
        contents.append({"type": "voice", "voice_id": "v-1", "id": "1"})
    if row.video_input:
        contents.append({"type": "feature_video", "url": "https://example.com/in.mp4"})
    if row.family == "motion-control":
        contents += [
            {"type": "image", "url": "https://e.com/c.png"},
            {"type": "video", "url": "https://e.com/m.mp4"},
        ]
        settings["character_orientation"] = "video"
    return {"contents": contents, "settings": settings, "options": options}


def legacy_body(row: Row) -> dict[str, Any]:
    """The legacy ``model_name`` body of this row (``duration`` a string, ``mode``, ``sound``)."""
    assert row.legacy_id is not None
    body: dict[str, Any] = {
        "model_name": row.legacy_id,
        "prompt": "a fox in snow",
        "mode": MODES[row.resolution],
        "duration": str(SECONDS),
        "sound": "on" if row.audio else "off",
    }
    if row.family == "image-to-video":
        body["image"] = "https://example.com/f.png"
    if row.video_input:
        body["video_list"] = [{"video_url": "https://example.com/in.mp4", "refer_type": "feature"}]
    if row.voice_control:
        body["voice_list"] = [{"voice_id": "v-1"}]
    return body


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.id)
@pytest.mark.parametrize("as_of", [NEW_PRICES, None], ids=["on-2026-09-20", "today"])
def test_every_video_row_via_both_ids_and_both_standards(row: Row, as_of: date | None) -> None:
    seconds = SECONDS
    via_new = estimate(resolution=row.resolution, as_of=as_of, **fields(row, row.new_id))
    if row.family == "motion-control":
        # no duration in the request: reserved at its longest, committed on the output's length
        assert via_new.amount == expected(row, MOTION_CONTROL_MAX_SECONDS)
        assert via_new.request.billed_on_output
        via_new = via_new.for_output("10.04")
    assert via_new.amount == expected(row, seconds), via_new.breakdown
    assert via_new.usd == via_new.amount * Decimal("0.14")
    assert via_new.breakdown[0].effective_from == NEW_PRICES
    parsed = PriceRequest.from_kling(f"/{row.family}/{row.new_id}", new_body(row))
    priced = estimate(parsed, as_of=as_of)
    if row.family == "motion-control":
        priced = priced.for_output(seconds)
    assert priced.amount == expected(row, seconds)
    assert parsed.resolution == row.resolution and parsed.audio == row.audio
    if row.legacy_id is None:
        return
    via_legacy = estimate(mode=MODES[row.resolution], as_of=as_of, **fields(row, row.legacy_id))
    if row.family == "motion-control":
        via_legacy = via_legacy.for_output(seconds)
        assert via_legacy.amount == expected(row)
        return  # motion control has no legacy endpoint
    assert via_legacy.amount == expected(row)
    body = legacy_body(row)
    endpoint = "/v1/videos/omni-video" if row.family == "omni-video" else ENDPOINT[row.family]
    assert estimate(PriceRequest.from_kling(endpoint, body), as_of=as_of).amount == expected(row)


IMAGES = [
    # (model, endpoint, extra body fields, resolution, image units per image)
    ("kling-v3", "/v1/images/generations", {}, "1k", "8"),
    ("kling-v3", "/v1/images/generations", {"image": "https://e.com/r.png"}, "2k", "8"),
    ("kling-v3-omni", "/v1/images/omni-image", {}, "1k", "8"),
    ("kling-v3-omni", "/v1/images/omni-image", {}, "2k", "8"),
    ("kling-v3-omni", "/v1/images/omni-image", {}, "4k", "16"),
    ("kling-image-o1", "/v1/images/omni-image", {}, "2k", "8"),
    ("kling-v2-1", "/v1/images/generations", {}, None, "4"),
    ("kling-v2-1", "/v1/images/generations", {"image": "https://e.com/r.png"}, None, "8"),
    (
        "kling-v2-1",
        "/v1/images/multi-image2image",
        {"subject_image_list": [{"subject_image": "a"}]},
        None,
        "16",
    ),
]


@pytest.mark.parametrize(("model", "endpoint", "extra", "resolution", "rate"), IMAGES)
def test_image_rows(
    model: str, endpoint: str, extra: dict[str, Any], resolution: str | None, rate: str
) -> None:
    body = {"model_name": model, "prompt": "a fox", "n": 3, **extra}
    if resolution:
        body["resolution"] = resolution.upper()  # Kling's adapters write 1K/2K/4K
    est = estimate(PriceRequest.from_kling(endpoint, body), as_of=NEW_PRICES)
    assert (est.amount, est.pack) == (Decimal(rate) * 3, "image")
    assert est.usd == Decimal(rate) * 3 * Decimal("0.0035")
    kind = endpoint.rsplit("/", 1)[1].replace("generations", "image")
    direct = estimate(
        kind=kind, model=model, n=3, resolution=resolution, image_input=bool(extra), as_of=NEW_PRICES
    )
    assert direct.amount == est.amount


@pytest.mark.parametrize(
    ("fields", "amount"),
    [
        (dict(kind="avatar", mode="std", duration=12), Decimal("4.8")),
        (dict(kind="avatar", resolution="1080p", duration=12), Decimal("9.6")),
        (dict(kind="text-to-audio"), Decimal("0.25")),
        (dict(kind="video-to-audio"), Decimal("0.25")),
        (dict(kind="lip-sync", duration=5), Decimal("0.5")),
        (dict(kind="advanced-lip-sync", duration=11), Decimal("1.5")),  # 3 started 5 s blocks
    ],
)
def test_avatar_audio_and_lip_sync(fields: dict[str, Any], amount: Decimal) -> None:
    assert estimate(as_of=NEW_PRICES, **fields).amount == amount


def test_the_issue_example_and_the_same_through_the_legacy_path() -> None:
    est = estimate(model="kling-3.0", resolution="1080p", duration=10)
    assert (est.amount, est.usd) == (Decimal(8), Decimal("1.12"))
    legacy = {"model_name": "kling-v3", "prompt": "p", "mode": "pro", "duration": "10"}
    assert estimate(PriceRequest.from_kling("text2video", legacy)).amount == Decimal(8)
    new = {"prompt": "p", "settings": {"resolution": "1080p", "duration": 10}}
    assert estimate(PriceRequest.from_kling("/text-to-video/kling-3.0", new)).amount == Decimal(8)
    assert (
        estimate(
            PriceRequest.from_kling("https://api-singapore.klingai.com/text-to-video/kling-3.0", new)
        ).amount
        == 8
    )


def test_earlier_usage_reprices_as_before() -> None:
    before = date(2026, 3, 1)
    old = estimate(model="kling-v3", mode="pro", duration=10, as_of=before)
    assert old.amount == 8 and old.breakdown[0].effective_from == date(2026, 1, 1)
    with pytest.raises(PricingError, match="duration 7 is not offered"):
        estimate(model="kling-v3", mode="pro", duration=7, as_of=before)  # 3..15 s came in 2026
    assert estimate(model="kling-v3", mode="pro", duration=7).amount == Decimal("5.6")
    with pytest.raises(PricingError) as info:  # the new ids are priced from the 2026 list on
        estimate(model="kling-3.0", duration=10, as_of=before)
    assert info.value.field == "model"
    assert estimate(model="kling-v2-master", mode="pro", as_of=date(2025, 1, 1)).amount == 10


@pytest.mark.parametrize(
    ("endpoint", "body", "field", "words"),
    [
        ("/omni-video/kling-3.0", {"contents": []}, "model", "not served at /omni-video/"),
        ("/text-to-video/kling-3.0", {"prompt": "p", "settings": {"duration": "10"}}, "settings.duration", "JSON integer"),
        ("/text-to-video/kling-3.0", {"prompt": "p", "settings": {"duration": 16}}, "duration", "duration 16 is not offered"),
        ("/omni-video/kling-o1", {"contents": [{"type": "prompt", "text": "p"}], "settings": {"duration": 11}}, "duration", "allowed: 3, 4, 5, 6, 7, 8, 9, 10"),
        ("/text-to-video/kling-2.6", {"prompt": "p", "settings": {"duration": 7}}, "duration", "allowed: 5, 10"),
        ("/text-to-video/kling-2.6", {"prompt": "p", "settings": {"resolution": "4k"}}, "mode", "allowed: pro, std"),
        ("/text-to-video/kling-2.6", {"prompt": "p", "settings": {"audio": "native"}}, "sound", "allowed: off"),
        ("/text-to-video/kling-2.6", {"prompt": "p", "settings": {"audio": "original"}}, "settings.audio", "allowed: native, off"),
        ("/text-to-video/kling-3.0-turbo", {"prompt": "p", "settings": {"audio": "off"}}, "settings.audio", "always on"),
        ("/text-to-video/kling-3.0-turbo", {"prompt": "p", "settings": {"resolution": "4k"}}, "mode", "allowed"),
        ("/text-to-video/kling-3.0", {"prompt": "p", "settings": {"resolution": "8k"}}, "settings.resolution", "720p, 1080p, 4k"),
        ("/text-to-video/kling-3.0", {"contents": [{"type": "prompt", "text": "p"}]}, "contents", "top-level prompt"),
        ("/text-to-video/kling-3.0", {"prompt": " "}, "prompt", "must not be empty"),
        ("/text-to-video/kling-2.6", {"prompt": "x" * 2501}, "prompt", "at most 2500"),
        ("/image-to-video/kling-3.0", {"contents": [{"type": "prompt", "text": "p"}, {"type": "feature_video", "url": "v"}]}, "contents", "only offered on omni-video"),
        ("/image-to-video/kling-3.0", {"contents": [{"type": "prompt", "text": "p"}]}, "contents", "needs a first_frame"),
        ("/image-to-video/kling-2.6", {"contents": [{"type": "first_frame", "url": "f"}, {"type": "voice", "voice_id": "v"}]}, "settings.audio", "need settings.audio = native"),
        ("/image-to-video/kling-3.0", {"contents": [{"type": "first_frame", "url": "f"}, {"type": "voice", "voice_id": "v"}], "settings": {"audio": "native"}}, "contents", "only offered on image-to-video with kling-2.6"),
        ("/omni-video/kling-3.0-omni", {"contents": [{"type": "feature_video", "url": "a"}, {"type": "base_video", "url": "b"}]}, "contents", "at most one video"),
        ("/omni-video/kling-3.0-omni", {"contents": [{"type": "last_frame", "url": "a"}]}, "contents", "needs a first_frame"),
        ("/omni-video/kling-3.0-omni", {"contents": [{"type": "sketch"}]}, "contents[0].type", "not offered"),
        ("/motion-control/kling-3.0", {"contents": [{"type": "image", "url": "a"}, {"type": "video", "url": "b"}]}, "settings.character_orientation", "required"),
        ("/motion-control/kling-3.0", {"contents": [{"type": "image", "url": "a"}, {"type": "video", "url": "b"}], "settings": {"character_orientation": "image", "duration": 5}}, "settings.duration", "billed on the output"),
        ("/motion-control/kling-2.6", {"contents": [{"type": "image", "url": "a"}]}, "contents", "needs a video item"),
        ("/text-to-video/kling-2.6", {"prompt": "p", "settings": {"multi_shot": True}}, "settings.multi_shot", "not offered for kling-2.6"),
        ("/text-to-video/kling-3.0", {"prompt": "p", "options": {"external_task_id": 5}}, "options.external_task_id", "string"),
    ],
)  # fmt: skip
def test_new_standard_bodies_kling_would_refuse(
    endpoint: str, body: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(PricingError, match=words) as info:
        estimate(PriceRequest.from_kling(endpoint, body))
    assert info.value.field == field


def test_new_standard_defaults_and_legacy_v3_fields() -> None:
    plain = PriceRequest.from_kling("/text-to-video/kling-3.0", {"prompt": "p"})
    assert (plain.mode, plain.resolution, plain.duration, plain.audio) == ("std", "720p", 5, False)
    turbo = PriceRequest.from_kling(
        "/image-to-video/kling-3.0-turbo", {"contents": [{"type": "first_frame", "url": "f"}]}
    )
    assert turbo.audio and estimate(turbo).amount == 4  # 0.8 x 5 s, audio always on
    assert estimate(kind="text2video", model="kling-3.0-turbo", duration=5).request.audio
    shots = {"prompt": "p", "settings": {"multi_shot": False, "aspect_ratio": "9:16", "duration": 15}}
    assert estimate(PriceRequest.from_kling("/text-to-video/kling-3.0", shots)).amount == 9
    legacy = {
        "model_name": "kling-v3",
        "prompt": "p",
        "mode": "4k",
        "duration": "3",
        "sound": "on",
        "multi_shot": True,
    }
    assert estimate(PriceRequest.from_kling("/v1/videos/text2video", legacy)).amount == 9
    with pytest.raises(PricingError, match=r"mode 4k .* is not offered for kling-v2-6"):
        estimate(
            PriceRequest.from_kling("text2video", {"model_name": "kling-v2-6", "prompt": "p", "mode": "4k"})
        )
    with pytest.raises(PricingError, match="needs a model"):
        estimate(kind="motion-control")
    with pytest.raises(PricingError, match="disagree"):
        estimate(model="kling-3.0", mode="std", resolution="1080p")
    with pytest.raises(PricingError, match="longer than a motion-control output"):
        estimate(kind="/motion-control/kling-3.0", duration=31)


@pytest.mark.parametrize(
    ("seconds", "billed"), [("10.04", 10), ("10.5", 11), ("2.4", 2), ("0.2", 1), (Decimal("7"), 7), (12, 12)]
)
def test_motion_control_commits_on_the_output_length(seconds: object, billed: int) -> None:
    reserved = estimate(kind="/motion-control/kling-2.6", resolution="1080p")
    assert reserved.amount == Decimal("0.8") * MOTION_CONTROL_MAX_SECONDS
    assert reserved.for_output(seconds).amount == Decimal("0.8") * billed
    for bad in ("-1", "abc", "NaN", True, 1.5):
        with pytest.raises(PricingError):
            reserved.for_output(bad)


# Fingerprints of legacy bodies computed by the code before the 2026 fields existed: the dedup
# cache keys them, so a new field must not change them (a cached request would be paid again).
FINGERPRINTS = [
    (
        "text2video",
        {"prompt": "a fox", "model_name": "kling-v2-6", "mode": "pro", "duration": "5", "sound": "on"},
        "cf861d15211f2a906470987d73491aae1f33b71d823405ab970ce71ddf374e55",
    ),
    ("text2video", {"prompt": "a fox"}, "e5c093cd546cff8dc20d62d153cff7ded7b166d73065b09b0cce62f818fae83a"),
    (
        "multi-image2video",
        {"image_list": [{"image": "a"}], "prompt": "p", "model_name": "kling-v1-6"},
        "8a07ae18c680f24e2289bbeb97d72aa4a6dde036b16236aecf785f0ecfc9b55b",
    ),
    (
        "image",
        {"prompt": "p", "model_name": "kling-v1-5", "n": 3, "image": "r.png"},
        "a340e415729c2ed8c63a5f1ea7c87e8f9fb59d7b7dc8e1286ecbfbb046e5216d",
    ),
    (
        "image",
        {"prompt": "p", "resolution": "2k"},
        "2c439d49b60decdaf06bed3101e3b46b5dcab70e5e4dba20800243fbd92ea4b8",
    ),
]


@pytest.mark.parametrize(("endpoint", "body", "expected"), FINGERPRINTS)
def test_legacy_requests_keep_their_dedup_fingerprint(
    endpoint: str, body: dict[str, Any], expected: str
) -> None:
    from kling_cost.cache import fingerprint

    assert fingerprint(endpoint, body) == expected
    assert set(PriceRequest.from_kling(endpoint, body).to_dict()) == {
        "kind", "model", "mode", "duration", "audio", "n", "image_input", "effect"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "amount"),
    [
        ("5.0", Decimal("0.5")),
        (Decimal("5.00"), Decimal("0.5")),
        ("5.01", Decimal("1.0")),  # a started second block: two blocks, as Kling counts them
        (5.04, Decimal("1.0")),  # identify-face's end_time 5040 ms / 1000
        ("0.2", Decimal("0.5")),
        (10, Decimal("1.0")),
        ("10", Decimal("1.0")),
        ("10.000001", Decimal("1.5")),
    ],
)
def test_lip_sync_is_priced_on_a_video_length_in_any_seconds_per_started_5_s(
    seconds: object, amount: Decimal
) -> None:
    """A video lasts 5.04 s, not a whole number (these were refused as "not a whole number")."""
    for kind in ("lip-sync", "advanced-lip-sync"):
        assert estimate(kind=kind, duration=seconds, as_of=NEW_PRICES).amount == amount
    body = {"input": {"video_id": "v", "mode": "audio2video", "audio_url": "a", "duration": seconds}}
    assert estimate(PriceRequest.from_kling("lip-sync", body), as_of=NEW_PRICES).amount == amount


@pytest.mark.parametrize("seconds", [0, "0", "-1", "-0.5", "NaN", "inf", "1e400", True, "5 s", [5], "8" * 50])
def test_a_lip_sync_length_that_is_no_length_is_refused(seconds: object) -> None:
    with pytest.raises(PricingError, match="duration"):
        estimate(kind="lip-sync", duration=seconds, as_of=NEW_PRICES)
