"""Kling's 2026 "new design standard": the model id in the path, ``prompt``/``contents[]`` +
``settings`` + ``options`` bodies, ``resolution``, integer durations and string ``audio``.

This module reads such a request into the fields :meth:`PriceRequest.build` takes; whether
a model, resolution or duration is offered is still the catalog's decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from ..errors import PricingError

__all__ = [
    "ALWAYS_AUDIO",
    "AUDIO_VALUES",
    "LEGACY_IDS",
    "MOTION_CONTROL_MAX_SECONDS",
    "NEW_FAMILIES",
    "RESOLUTIONS",
    "new_standard_fields",
    "output_seconds",
    "split_new_path",
]

NEW_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "text-to-video": ("text2video", ("kling-3.0-turbo", "kling-3.0", "kling-2.6", "kling-2.5-turbo")),
    "image-to-video": ("image2video", ("kling-3.0-turbo", "kling-3.0", "kling-2.6", "kling-2.5-turbo")),
    "omni-video": ("omni-video", ("kling-3.0-omni", "kling-o1")),
    "motion-control": ("motion-control", ("kling-3.0", "kling-2.6")),
}
"""New-standard create paths ``/{family}/{model}``: the endpoint kind each is priced as and
the models Kling serves there."""

LEGACY_IDS: dict[str, str] = {
    "kling-3.0": "kling-v3",
    "kling-3.0-omni": "kling-v3-omni",
    "kling-o1": "kling-video-o1",
    "kling-2.6": "kling-v2-6",
    "kling-2.5-turbo": "kling-v2-5-turbo",
}
"""New model id -> the legacy ``model_name`` of the same model (they price the same).
``kling-3.0-turbo`` has no legacy id."""

RESOLUTIONS: dict[str, str] = {"720p": "std", "1080p": "pro", "4k": "4k"}
"""``settings.resolution`` -> the mode it is priced as (``mode`` on the legacy standard)."""

ALWAYS_AUDIO = frozenset({"kling-3.0-turbo"})
"""Models whose generated audio is always on (3.0 Turbo has no audio setting; its price row
says "with native audio")."""

AUDIO_VALUES: dict[str, tuple[str, ...]] = {
    "kling-3.0": ("native", "off"),
    "kling-2.6": ("native", "off"),
    "kling-3.0-omni": ("native", "original", "off"),
    "kling-o1": ("original", "off"),
    "kling-3.0-turbo": (),
    "kling-2.5-turbo": (),
}
"""The ``settings.audio`` values each model takes (motion control: ``original``/``off``).
Only ``native`` is generated sound, the priced audio; ``original`` keeps an input video's."""

MOTION_AUDIO = ("original", "off")

MOTION_CONTROL_MAX_SECONDS = 30
"""The longest output a motion-control task is reserved for. Kling bills motion control on
the output video's length (whole seconds) and its request carries no duration; KLING_API.md
gives no maximum, so this is the reference-video limit Kling's product pages state (30 s)."""

CONTENT_TYPES = (
    "prompt",
    "first_frame",
    "last_frame",
    "refer_image",
    "feature_video",
    "base_video",
    "element",
    "voice",
    "image",
    "video",
)
MAX_PROMPT = 2500
MAX_PROMPT_3_0_T2V = 3072
MAX_VOICES = 2
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
ORIENTATIONS = ("image", "video")


def split_new_path(endpoint: str) -> tuple[str, str] | None:
    """``(family, model)`` of a new-standard create path (``/text-to-video/kling-3.0``, with or
    without the leading slash or a scheme and host), else ``None``."""
    text = endpoint.strip()
    if "://" in text:
        text = "/" + text.split("://", 1)[1].partition("/")[2]
    parts = [p for p in text.split("?", 1)[0].split("/") if p]
    if len(parts) != 2 or parts[0] not in NEW_FAMILIES:
        return None
    family, model = parts
    models = NEW_FAMILIES[family][1]
    if model not in models:
        raise PricingError(
            f"model {model!r} is not served at /{family}/; allowed: {', '.join(models)}",
            field="model",
            value=model,
            allowed=models,
        )
    return family, model


def _fail(field: str, message: str, value: object = None, allowed: tuple[str, ...] = ()) -> PricingError:
    return PricingError(message, field=field, value=value, allowed=allowed)


def _mapping(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(name, f"{name} must be a JSON object", value)
    return value


def _prompt(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise _fail(field, f"{field} must be text", value)
    if len(value) > limit:
        raise _fail(field, f"{field} has {len(value)} characters; at most {limit} are allowed", len(value))
    return value


def _contents(family: str, model: str, body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = body.get("contents")
    if family == "text-to-video":
        if raw is not None:
            raise _fail("contents", "text-to-video takes a top-level prompt, not contents")
        text = _prompt(
            "prompt", body.get("prompt"), MAX_PROMPT_3_0_T2V if model == "kling-3.0" else MAX_PROMPT
        )
        if not text.strip():
            raise _fail("prompt", "prompt must not be empty for text-to-video", text)
        return []
    if "prompt" in body:
        raise _fail("prompt", f"{family} takes its prompt as a contents item ({{type: prompt, text}})")
    if not isinstance(raw, list) or not raw:
        raise _fail("contents", f"contents must be a non-empty list for {family}", raw)
    items: list[Mapping[str, Any]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping) or item.get("type") not in CONTENT_TYPES:
            kind = item.get("type") if isinstance(item, Mapping) else None
            raise _fail(
                f"contents[{index}].type",
                f"contents[{index}].type {kind!r} is not offered; allowed: {', '.join(CONTENT_TYPES)}",
                kind,
                CONTENT_TYPES,
            )
        if item["type"] == "prompt":
            _prompt(f"contents[{index}].text", item.get("text"), MAX_PROMPT)
        items.append(item)
    return items


def _check_contents(
    family: str, model: str, items: list[Mapping[str, Any]], audio: str | None
) -> tuple[bool, bool]:
    """Kling's rules on contents types; returns ``(video_input, voice_control)``."""
    types = [str(i["type"]) for i in items]
    videos = [t for t in types if t in ("feature_video", "base_video")]
    if videos and family != "omni-video":
        raise _fail("contents", f"{videos[0]} is only offered on omni-video", videos[0])
    if len(videos) > 1:
        raise _fail(
            "contents", "omni-video takes at most one video (feature_video or base_video)", len(videos)
        )
    if "last_frame" in types and "first_frame" not in types:
        raise _fail("contents", "last_frame needs a first_frame", "last_frame")
    motion_only = [t for t in types if t in ("image", "video")]
    if family == "motion-control":
        for needed in ("image", "video"):
            if needed not in types:
                raise _fail("contents", f"motion-control needs a {needed} item", None)
    elif motion_only:
        raise _fail("contents", f"{motion_only[0]} items are only offered on motion-control", motion_only[0])
    if family == "image-to-video" and "first_frame" not in types and "refer_image" not in types:
        raise _fail("contents", "image-to-video needs a first_frame (or refer_image) item", None)
    voices = types.count("voice")
    if voices:
        if family != "image-to-video" or model != "kling-2.6":
            raise _fail("contents", "voice items are only offered on image-to-video with kling-2.6", "voice")
        if voices > MAX_VOICES:
            raise _fail("contents", f"at most {MAX_VOICES} voice items are allowed", voices)
        if audio != "native":
            raise _fail("settings.audio", "voice items need settings.audio = native", audio, ("native",))
    return bool(videos), bool(voices)


def _audio(family: str, model: str, settings: Mapping[str, Any]) -> str | None:
    allowed = MOTION_AUDIO if family == "motion-control" else AUDIO_VALUES.get(model, ())
    value = settings.get("audio")
    if value is None:
        return "original" if family == "motion-control" else None
    if not allowed:
        why = "its audio is always on" if model in ALWAYS_AUDIO else "it has no audio setting"
        raise _fail("settings.audio", f"{model} takes no settings.audio: {why}", value, ())
    if value not in allowed:
        raise _fail(
            "settings.audio",
            f"settings.audio {value!r} is not offered for {model} {family}; allowed: {', '.join(allowed)}",
            value,
            allowed,
        )
    return str(value)


def _resolution(settings: Mapping[str, Any]) -> str:
    value = settings.get("resolution", "720p")
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in RESOLUTIONS:
        raise _fail(
            "settings.resolution",
            f"settings.resolution {value!r} is not offered; allowed: {', '.join(RESOLUTIONS)}",
            value,
            tuple(RESOLUTIONS),
        )
    return RESOLUTIONS[str(key)]


def _duration(family: str, settings: Mapping[str, Any]) -> int | None:
    if "duration" not in settings:
        return None
    value = settings["duration"]
    if family == "motion-control":
        raise _fail(
            "settings.duration",
            "motion-control takes no duration: it is billed on the output video's length",
            value,
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("settings.duration", f"settings.duration must be a JSON integer, not {value!r}", value)
    return value


def _check_settings(family: str, model: str, settings: Mapping[str, Any]) -> None:
    if "multi_shot" in settings:
        if not isinstance(settings["multi_shot"], bool):
            raise _fail(
                "settings.multi_shot", "settings.multi_shot must be true or false", settings["multi_shot"]
            )
        if model not in ("kling-3.0", "kling-3.0-omni"):
            raise _fail("settings.multi_shot", f"settings.multi_shot is not offered for {model}", model)
    ratio = settings.get("aspect_ratio")
    if ratio is not None and ratio not in ASPECT_RATIOS:
        raise _fail(
            "settings.aspect_ratio",
            f"settings.aspect_ratio {ratio!r} is not offered; allowed: {', '.join(ASPECT_RATIOS)}",
            ratio,
            ASPECT_RATIOS,
        )
    if family == "motion-control":
        orientation = settings.get("character_orientation")
        if orientation not in ORIENTATIONS:
            raise _fail(
                "settings.character_orientation",
                "settings.character_orientation is required on motion-control; allowed: image, video",
                orientation,
                ORIENTATIONS,
            )


def _check_options(options: Mapping[str, Any]) -> None:
    for name in ("callback_url", "external_task_id"):
        value = options.get(name)
        if value is not None and not isinstance(value, str):
            raise _fail(f"options.{name}", f"options.{name} must be a string", value)
    watermark = options.get("watermark_info")
    if watermark is not None and not (
        isinstance(watermark, Mapping) and isinstance(watermark.get("enabled", False), bool)
    ):
        raise _fail("options.watermark_info", 'options.watermark_info must be {"enabled": true|false}')


def new_standard_fields(family: str, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The :meth:`PriceRequest.build` fields of a new-standard create body sent to ``/{family}/{model}``.

    Raises :class:`PricingError` for a body Kling would refuse: the wrong prompt form,
    unknown contents types, a video input outside omni, a voice without native audio, a
    string duration, an audio value the model does not take, a missing motion orientation.
    """
    if not isinstance(body, Mapping):
        raise _fail("body", "a create body must be a JSON object", type(body).__name__)
    settings = _mapping(body, "settings")
    _check_options(_mapping(body, "options"))
    items = _contents(family, model, body)
    audio = _audio(family, model, settings)
    video_input, voice_control = _check_contents(family, model, items, audio)
    _check_settings(family, model, settings)
    return {
        "kind": NEW_FAMILIES[family][0],
        "model": model,
        "mode": _resolution(settings),
        "duration": _duration(family, settings),
        "audio": model in ALWAYS_AUDIO or audio == "native",
        "video_input": video_input,
        "voice_control": voice_control,
    }


def output_seconds(value: object) -> int:
    """An output video's length (``"10.04"``, ``10``, a Decimal) in the whole seconds Kling
    bills: rounded half up, at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise _fail("duration", f"an output duration must be a number of seconds, not {value!r}", value)
    try:
        seconds = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise _fail("duration", f"output duration {value!r} is not a number of seconds", value) from None
    if not seconds.is_finite() or seconds <= 0 or seconds > 86_400:
        raise _fail("duration", f"output duration {value!r} must be more than 0 s and at most a day", value)
    return max(1, int(seconds.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
