"""Which API standard a batch row goes out on, and its new-standard body.

A row goes on Kling's **new standard** (``POST /{family}/{model}``, ``settings``/``options``)
when it says ``standard: new``, when its endpoint is a new-standard path
(``/text-to-video/kling-3.0``), or when its model is a new-standard id (``kling-3.0``,
``kling-3.0-turbo``, ``kling-3.0-omni``, ``kling-o1``, ``kling-2.6``, ``kling-2.5-turbo``). Every
other row stays on the **legacy** standard (``model_name``), as batches always were. A row
may force either: ``standard: legacy`` sends a new id by its legacy ``model_name``
(``kling-3.0`` as ``kling-v3``; ``kling-3.0-turbo`` has none, so that is an error), and
``standard: new`` sends a legacy ``model_name`` by its new id (``kling-v3`` as ``kling-3.0``).
Only text-to-video, image-to-video, omni-video and motion-control exist on the new standard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ..pricing.standard import LEGACY_IDS, NEW_FAMILIES, RESOLUTIONS

__all__ = ["NEW_IDS", "STANDARDS", "choose_standard", "legacy_model", "new_row_body"]

STANDARDS = ("legacy", "new")
NEW_IDS = frozenset(model for _, models in NEW_FAMILIES.values() for model in models)
"""Model ids of the new standard (a row naming one goes out on it unless it says otherwise)."""
_NEW_OF = {legacy: new for new, legacy in LEGACY_IDS.items()}
_FAMILY_OF = {kind: family for family, (kind, _) in NEW_FAMILIES.items()}
_RESOLUTION_OF = {mode: resolution for resolution, mode in RESOLUTIONS.items()}
_SETTINGS = ("aspect_ratio", "multi_shot", "character_orientation")
_OPTIONS = ("external_task_id", "callback_url")
_AUDIO = {
    "on": "native",
    "true": "native",
    "yes": "native",
    "1": "native",
    "false": "off",
    "no": "off",
    "0": "off",
}


def choose_standard(where: str, kind: str, path_model: str | None, raw: dict[str, Any]) -> str:
    """``legacy`` or ``new`` for a row (its ``standard`` field is taken out of ``raw``); the
    row's ``model_name`` becomes the model id of that standard."""
    given = raw.pop("standard", None)
    if given is not None and str(given).strip().lower() not in STANDARDS:
        raise ConfigurationError(f"{where}: standard {given!r} is not offered; allowed: legacy, new")
    standard = None if given is None else str(given).strip().lower()
    model = raw.get("model_name")
    if model is not None and not isinstance(model, str):
        raise ConfigurationError(f"{where}: model must be a model name (text), not {model!r}")
    if path_model is not None:
        if model not in (None, path_model, LEGACY_IDS.get(path_model)):
            raise ConfigurationError(f"{where}: model {model} and the path's model {path_model} disagree")
        if standard == "legacy":
            raise ConfigurationError(f"{where}: a new-standard path cannot go out on the legacy standard")
        raw["model_name"] = path_model
        return "new"
    if standard is None:
        standard = "new" if model in NEW_IDS else "legacy"
    if standard == "legacy" and model in NEW_IDS:
        raw["model_name"] = legacy_model(where, str(model))
    elif standard == "new":
        if _FAMILY_OF.get(kind) is None:
            raise ConfigurationError(
                f"{where}: {kind} has no new-standard endpoint; allowed: {', '.join(_FAMILY_OF)}"
            )
        if model is None:
            raise ConfigurationError(f"{where}: the new standard needs a model (it goes in the path)")
        raw["model_name"] = _NEW_OF.get(str(model), model)
    return standard


def legacy_model(where: str, model: str) -> str:
    """The legacy ``model_name`` of a new-standard id."""
    if model not in LEGACY_IDS:
        raise ConfigurationError(f"{where}: {model} has no legacy endpoint; send it on the new standard")
    return LEGACY_IDS[model]


def _audio(where: str, value: object) -> str:
    if isinstance(value, bool):
        return "native" if value else "off"
    text = str(value).strip().lower()
    if text in ("native", "original", "off"):
        return text
    if text in _AUDIO:
        return _AUDIO[text]
    raise ConfigurationError(f"{where}: audio {value!r} is not offered; allowed: native, original, off")


_FLAGS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _flag(where: str, name: str, value: object) -> bool:
    """A yes/no field (a JSON bool, or CSV text): anything else is refused, never read as no."""
    if isinstance(value, bool):
        return value
    flag = _FLAGS.get(str(value).strip().lower()) if isinstance(value, (str, int)) else None
    if flag is None:
        raise ConfigurationError(f"{where}: {name} {value!r} is not offered; allowed: true, false")
    return flag


def _duration(where: str, value: object) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ConfigurationError(f"{where}: duration {value!r} must be a whole number of seconds")
    return int(text)


def _resolution(where: str, raw: dict[str, Any]) -> str | None:
    mode = raw.pop("mode", None)
    value = raw.pop("resolution", None)
    resolution = None if value is None else str(value).strip().lower()
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ConfigurationError(
            f"{where}: resolution {value!r} is not offered; allowed: {', '.join(RESOLUTIONS)}"
        )
    from_mode = None if mode is None else _RESOLUTION_OF.get(str(mode))
    if mode is not None and from_mode is None:
        raise ConfigurationError(f"{where}: mode {mode!r} is not offered; allowed: std, pro, 4k")
    if resolution is not None and from_mode is not None and resolution != from_mode:
        raise ConfigurationError(
            f"{where}: mode {mode} and resolution {resolution} disagree; give one of them"
        )
    return resolution or from_mode


def _contents(where: str, family: str, raw: dict[str, Any]) -> list[dict[str, Any]]:
    given = raw.pop("contents", None)
    if given is not None and not (isinstance(given, list) and all(isinstance(i, Mapping) for i in given)):
        raise ConfigurationError(f"{where}: contents must be a list of objects ({{type, ...}})")
    items: list[dict[str, Any]] = []
    prompt = raw.pop("prompt", None)
    if prompt is not None and family != "text-to-video":
        items.append({"type": "prompt", "text": prompt})
    image, tail, video = raw.pop("image", None), raw.pop("image_tail", None), raw.pop("video", None)
    if image is not None:
        items.append({"type": "image" if family == "motion-control" else "first_frame", "url": image})
    if tail is not None:
        items.append({"type": "last_frame", "url": tail})
    if video is not None:
        items.append({"type": "video" if family == "motion-control" else "feature_video", "url": video})
    if prompt is not None and family == "text-to-video":
        raw["prompt"] = prompt
    return items + [dict(i) for i in given or ()]


def new_row_body(where: str, kind: str, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(path, body)`` of a row going out on the new standard (``raw`` holds its canonical
    fields: ``model_name`` already a new id, ``sound`` the ``audio`` alias)."""
    family = _FAMILY_OF[kind]
    model = str(raw.pop("model_name"))
    settings: dict[str, Any] = {}
    resolution = _resolution(where, raw)
    if resolution is not None:
        settings["resolution"] = resolution
    if "duration" in raw:
        settings["duration"] = _duration(where, raw.pop("duration"))
    if "sound" in raw:
        settings["audio"] = _audio(where, raw.pop("sound"))
    for name in _SETTINGS:
        if name in raw:
            settings[name] = raw.pop(name)
    if "multi_shot" in settings:
        settings["multi_shot"] = _flag(where, "multi_shot", settings["multi_shot"])
    options = {name: raw.pop(name) for name in _OPTIONS if name in raw}
    watermark = raw.pop("watermark", None)
    if watermark is not None:
        options["watermark_info"] = {"enabled": _flag(where, "watermark", watermark)}
    contents = _contents(where, family, raw)
    body: dict[str, Any] = {k: v for k, v in raw.items() if k == "prompt"}
    left = sorted(k for k in raw if k != "prompt")
    if left:
        raise ConfigurationError(
            f"{where}: {', '.join(left)} {'is a' if len(left) == 1 else 'are'} legacy field"
            f"{'' if len(left) == 1 else 's'} the new standard does not take (this row goes out on it: "
            "its model is a new-standard id or it says standard: new)"
        )
    if contents:
        body["contents"] = contents
    if settings:
        body["settings"] = settings
    if options:
        body["options"] = options
    return f"/{family}/{model}", body
