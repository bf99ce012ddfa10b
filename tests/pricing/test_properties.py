"""Every catalog entry x every valid request: exact arithmetic; invalid values never price."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from kling_cost import PricingError, estimate, load_catalog
from kling_cost.pricing import PriceEntry
from kling_cost.pricing.catalog import choose
from kling_cost.pricing.request import ENDPOINTS
from kling_cost.pricing.standard import ALWAYS_AUDIO

CATALOGS = [load_catalog("kling-api"), load_catalog("kling-app-credits")]
ENTRIES = [(cat, entry) for cat in CATALOGS for entry in cat.entries]
ENDPOINT_FOR = {
    "video": ["text2video", "image2video", "multi-image2video", "omni-video"],
    "extend": ["video-extend"],
    "lipsync": ["lip-sync"],
    "effects": ["effects"],
    "image": ["image"],
    "tryon": ["tryon"],
    "motion": ["motion-control"],
    "avatar": ["avatar"],
    "audio": ["text-to-audio", "video-to-audio"],
}
NO_MODEL = ("lipsync", "avatar", "audio")


@st.composite
def entry_requests(draw: st.DrawFn) -> tuple[object, PriceEntry, dict[str, object]]:
    cat, entry = draw(st.sampled_from(ENTRIES))
    fields: dict[str, object] = {"kind": draw(st.sampled_from(ENDPOINT_FOR[entry.kind]))}
    models = entry.models or (cat.known_models(entry.kind) if entry.kind not in NO_MODEL else ())
    if entry.kind not in NO_MODEL:
        if entry.models is None and entry.kind not in cat.defaults:
            fields["model"] = None
            if fields["kind"] == "omni-video":  # Kling names no default omni model
                fields["kind"] = "text2video"
        else:  # a 3.0 Turbo video always has sound: it is no request of an entry without audio
            usable = [m for m in models if entry.audio or entry.kind != "video" or m not in ALWAYS_AUDIO]
            fields["model"] = draw(st.sampled_from(usable))
    fields["mode"] = draw(st.sampled_from(entry.modes or ("std", "pro")))
    if entry.durations:
        fields["duration"] = draw(st.sampled_from(entry.durations))
    elif entry.basis in ("per_second", "per_block"):
        longest = 30 if entry.kind == "motion" else 600  # a motion-control output lasts at most 30 s
        fields["duration"] = draw(st.integers(min_value=1, max_value=longest))
    fields["audio"] = entry.audio
    for flag in ("video_input", "voice_control"):  # an entry that does not care prices the plain request
        fields[flag] = bool(getattr(entry, flag))
    if entry.kind == "image":
        fields["n"] = draw(st.integers(min_value=1, max_value=9))
        fields["multi_image"] = bool(entry.multi_image)
        if entry.image_input is not None:
            fields["image_input"] = entry.image_input
        else:
            fields["image_input"] = fields["multi_image"] or draw(st.booleans())
        if entry.resolutions:
            fields["resolution"] = draw(st.sampled_from(entry.resolutions))
    return cat, entry, fields


@settings(max_examples=400, deadline=None)
@given(entry_requests())
def test_every_entry_prices_exactly(case: tuple[object, PriceEntry, dict[str, object]]) -> None:
    cat, entry, fields = case
    day = entry.effective_from
    est = estimate(catalog=cat, as_of=day, **fields)  # type: ignore[arg-type]
    chosen = est.breakdown[0]
    # the entry that priced it is in force and is this one or one at least as new and as specific
    assert chosen.effective_from <= day
    line_entry = chosen
    quantity = {
        "amount": 1,
        "per_image": int(fields.get("n", 1)),  # type: ignore[call-overload]
        "per_second": fields.get("duration"),
        "per_block": math.ceil(int(fields.get("duration", 0)) / 5),
    }[line_entry.basis]  # type: ignore[call-overload]
    assert line_entry.quantity == quantity
    assert est.amount == line_entry.rate * line_entry.quantity
    assert isinstance(est.amount, Decimal)
    assert est.amount == est.amount.quantize(Decimal("0.001"))
    if est.usd is not None:
        assert est.usd == est.amount * cat.usd_per_unit[est.pack]  # type: ignore[attr-defined]
    if chosen.effective_from == entry.effective_from and entry.specificity >= 3:
        assert chosen.rate == entry.rate


@settings(max_examples=300, deadline=None)
@given(
    catalog=st.sampled_from(CATALOGS),
    kind=st.sampled_from([*ENDPOINTS, "holo", "video2"]),
    model=st.one_of(st.none(), st.sampled_from(["kling-v1", "kling-v2-6", "kling-v3", "kling-v9", "x"])),
    mode=st.sampled_from(["std", "pro", "standard", "ultra", ""]),
    duration=st.one_of(st.none(), st.integers(min_value=-10, max_value=20)),
    audio=st.booleans(),
    n=st.integers(min_value=-2, max_value=12),
    day=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 1, 1)),
)
def test_requests_either_price_exactly_or_raise_pricing_error(
    catalog: object,
    kind: str,
    model: str | None,
    mode: str,
    duration: int | None,
    audio: bool,
    n: int,
    day: date,
) -> None:
    try:
        est = estimate(
            catalog=catalog,
            kind=kind,
            model=model,
            mode=mode,  # type: ignore[arg-type]
            duration=duration,
            audio=audio,
            n=n,
            as_of=day,
        )
    except PricingError as exc:
        assert exc.field
        return
    assert est.amount >= 0
    assert est.request.n >= 1
    assert est.request.mode in ("std", "pro")
    assert est.request.duration is None or est.request.duration > 0
    entry = est.breakdown[0]
    assert entry.effective_from <= day


def test_choose_prefers_newest_then_specific() -> None:
    base = dict(kind="video", basis="amount", source="s")
    old = PriceEntry(rate=Decimal(1), effective_from=date(2025, 1, 1), models=("a",), **base)  # type: ignore[arg-type]
    new = PriceEntry(rate=Decimal(2), effective_from=date(2026, 1, 1), **base)  # type: ignore[arg-type]
    assert choose([old, new]) is new
    same_day = PriceEntry(rate=Decimal(3), effective_from=date(2026, 1, 1), models=("a",), **base)  # type: ignore[arg-type]
    assert choose([new, same_day]) is same_day
