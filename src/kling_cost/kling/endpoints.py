"""Kling's endpoints and the rules a create body must follow before it is sent.

Public because more than the client needs them: the guard validates and prices a body with
these rules before it reserves, and batch files name endpoints by the same aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..errors import ConfigurationError, PricingError
from ..pricing import Catalog, PriceRequest, estimate
from ..pricing.request import check_prompts, normalise_endpoint, normalise_mode
from ..pricing.standard import NEW_FAMILIES, split_new_path

__all__ = [
    "ACCOUNT_COSTS_PATH",
    "BASE_URLS",
    "BILLING_BALANCE_PATH",
    "BILLING_PACKAGE_PATH",
    "CREATE_PATHS",
    "ENV_BASE_URL",
    "IDENTIFY_FACE_PATH",
    "TASKS_PATH",
    "LegacyEndpoint",
    "check_shape",
    "endpoint_kind",
    "external_task_id_of",
    "legacy_path",
    "new_path",
    "normalise_body",
    "validate_create",
    "with_external_task_id",
]

BASE_URLS = {
    "global": "https://api-singapore.klingai.com",
    "china": "https://api-beijing.klingai.com",
}

CREATE_PATHS: dict[str, str] = {
    "text2video": "/v1/videos/text2video",
    "image2video": "/v1/videos/image2video",
    "multi-image2video": "/v1/videos/multi-image2video",
    "video-extend": "/v1/videos/video-extend",
    "lip-sync": "/v1/videos/lip-sync",
    "effects": "/v1/videos/effects",
    "image": "/v1/images/generations",
    "tryon": "/v1/images/kolors-virtual-try-on",
    "omni-video": "/v1/videos/omni-video",
    "advanced-lip-sync": "/v1/videos/advanced-lip-sync",
}
"""Legacy create path of each endpoint kind; query is ``<path>/{id}``, list is
``<path>?pageNum&pageSize``. Motion control has none: only ``/motion-control/{model}``."""

LegacyEndpoint = Literal[
    "text2video",
    "image2video",
    "multi-image2video",
    "video-extend",
    "lip-sync",
    "effects",
    "image",
    "tryon",
    "omni-video",
    "advanced-lip-sync",
]
"""The legacy endpoint kinds, by name: a task queried there is a legacy :class:`KlingTask`."""

IDENTIFY_FACE_PATH = "/v1/videos/identify-face"
"""The first step of two-step lip-sync (synchronous: no task)."""

TASKS_PATH = "/tasks"
"""New standard: ``GET /tasks?task_ids=...`` (or ``external_task_ids``), ``POST /tasks`` (cursor listing)."""

BILLING_PACKAGE_PATH = "/account/billing/package"
BILLING_BALANCE_PATH = "/account/billing/balance"

ENV_BASE_URL = "KLING_BASE_URL"
"""Where the base URL comes from when none is given (as the CLI's ``--base-url``)."""

ACCOUNT_COSTS_PATH = "/account/costs"
MAX_IMAGE_LIST = 4


def endpoint_kind(endpoint: str) -> str:
    """Normalise an endpoint name, alias or path (``t2v``, ``images/generations``,
    ``/text-to-video/kling-3.0``...) to its kind (``text2video``)."""
    return endpoint if endpoint in CREATE_PATHS else normalise_endpoint(endpoint)


def new_path(endpoint: str) -> str | None:
    """``/{family}/{model}`` when ``endpoint`` is a new-standard create path (with or without
    the host), else ``None``. A model not served at that path raises :class:`PricingError`."""
    new = split_new_path(endpoint) if isinstance(endpoint, str) else None
    return None if new is None else f"/{new[0]}/{new[1]}"


def legacy_path(kind: str) -> str:
    """The legacy create path of an endpoint kind; :class:`ConfigurationError` for a kind that
    has none (motion control is only ``/motion-control/{model}``)."""
    if kind in CREATE_PATHS:
        return CREATE_PATHS[kind]
    families = [f"/{family}/{{model}}" for family, (k, _) in NEW_FAMILIES.items() if k == kind]
    where = f"; use the new standard: {families[0]}" if families else ""
    raise ConfigurationError(f"{kind} has no legacy endpoint this client can call{where}")


def external_task_id_of(endpoint: str, body: Mapping[str, Any]) -> str | None:
    """The ``external_task_id`` of a create body: ``options.external_task_id`` on the new
    standard, the top-level field on the legacy one."""
    source: object = body.get("options") if new_path(endpoint) else body
    value = source.get("external_task_id") if isinstance(source, Mapping) else None
    return None if value is None or value == "" else str(value)


def with_external_task_id(endpoint: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    """``body`` carrying ``key`` as its ``external_task_id`` where its standard puts it."""
    if new_path(endpoint):
        options = body.get("options")
        body["options"] = {**(options if isinstance(options, Mapping) else {}), "external_task_id": key}
    else:
        body["external_task_id"] = key
    return body


def _missing(endpoint: str, field: str) -> PricingError:
    return PricingError(f"{field} is required for {endpoint}", field=field, value=None)


def _text(body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field)
    return isinstance(value, str) and bool(value.strip())


def check_shape(endpoint: str, body: Mapping[str, Any]) -> None:
    """Kling's required fields per endpoint; raises :class:`PricingError` naming the field."""
    if endpoint == "image2video" and not (_text(body, "image") or _text(body, "image_tail")):
        raise _missing(endpoint, "image")
    if endpoint == "multi-image2video":
        images = body.get("image_list")
        if not isinstance(images, list) or not 1 <= len(images) <= MAX_IMAGE_LIST:
            raise PricingError(
                f"image_list must hold 1 to {MAX_IMAGE_LIST} images for {endpoint}",
                field="image_list",
                value=images,
                allowed=tuple(range(1, MAX_IMAGE_LIST + 1)),
            )
        if not all(isinstance(i, Mapping) and _text(i, "image") for i in images):
            raise PricingError('each image_list item must be {"image": <url or base64>}', field="image_list")
        if not _text(body, "prompt"):
            raise _missing(endpoint, "prompt")
    if endpoint == "video-extend" and not _text(body, "video_id"):
        raise _missing(endpoint, "video_id")
    if endpoint == "image" and not _text(body, "prompt"):
        raise _missing(endpoint, "prompt")
    if endpoint == "tryon":
        for field in ("human_image", "cloth_image"):
            if not _text(body, field):
                raise _missing(endpoint, field)
    if endpoint == "effects":
        if not _text(body, "effect_scene"):
            raise _missing(endpoint, "effect_scene")
        if not isinstance(body.get("input"), Mapping):
            raise _missing(endpoint, "input")
    if endpoint == "lip-sync":
        check_lip_sync(body.get("input"))
    if endpoint == "advanced-lip-sync":
        check_face_choose(body)


NEW_BODY_FIELDS = ("prompt", "contents", "settings", "options")
"""The top-level fields of a new-standard create body (KLING_API.md's addendum)."""


def check_new_fields(body: Mapping[str, Any]) -> None:
    """A new-standard body has only :data:`NEW_BODY_FIELDS`: a legacy field (``model_name``,
    ``mode``, ``duration``, a top-level ``external_task_id``...) would be ignored by Kling and
    the request priced and sent as something else, so it is refused, naming the field."""
    extra = [str(name) for name in body if name not in NEW_BODY_FIELDS]
    if extra:
        raise PricingError(
            f"{extra[0]} is not a field of a new-standard body; it has {', '.join(NEW_BODY_FIELDS)} "
            "(the model is in the path; resolution, duration, audio go in settings; "
            "external_task_id, callback_url in options)",
            field=extra[0],
            value=body[extra[0]],
            allowed=NEW_BODY_FIELDS,
        )


def check_face_choose(body: Mapping[str, Any]) -> None:
    """Advanced lip-sync: a ``session_id`` from identify-face and a non-empty ``face_choose``,
    each item a ``face_id`` with exactly one of ``audio_id`` and ``sound_file``."""
    endpoint = "advanced-lip-sync"
    if not _text(body, "session_id"):
        raise _missing(endpoint, "session_id")
    choices = body.get("face_choose")
    if not isinstance(choices, list) or not choices:
        raise PricingError("face_choose must be a non-empty list", field="face_choose", value=choices)
    for index, choice in enumerate(choices):
        if not isinstance(choice, Mapping) or choice.get("face_id") in (None, ""):
            raise _missing(endpoint, f"face_choose[{index}].face_id")
        sounds = [k for k in ("audio_id", "sound_file") if _text(choice, k)]
        if len(sounds) != 1:
            raise PricingError(
                f"face_choose[{index}] needs exactly one of audio_id and sound_file",
                field=f"face_choose[{index}]",
                value=sounds,
                allowed=("audio_id", "sound_file"),
            )


def check_lip_sync(raw: object) -> None:
    endpoint = "lip-sync"
    if not isinstance(raw, Mapping):
        raise _missing(endpoint, "input")
    if not (_text(raw, "video_id") or _text(raw, "video_url")):
        raise _missing(endpoint, "input.video_id or input.video_url")
    mode = raw.get("mode")
    if mode not in ("text2video", "audio2video"):
        raise PricingError(
            f"input.mode {mode!r} is not offered; allowed: text2video, audio2video",
            field="input.mode",
            value=mode,
            allowed=("text2video", "audio2video"),
        )
    if mode == "text2video" and not _text(raw, "text"):
        raise _missing(endpoint, "input.text")
    if mode == "audio2video" and not (_text(raw, "audio_file") or _text(raw, "audio_url")):
        raise _missing(endpoint, "input.audio_file or input.audio_url")


def validate_create(
    endpoint: str, body: Mapping[str, Any], catalog: Catalog | None = None
) -> PriceRequest | None:
    """Check a create body as Kling would, before anything is sent.

    Prompts, required fields and (with a ``catalog``) model, mode, duration and ``n`` are
    checked with the estimator's rules and wording. A new-standard path
    (``/text-to-video/kling-3.0``) is checked with :meth:`PriceRequest.from_kling`'s rules
    for its ``prompt``/``contents``, ``settings`` and ``options``. Returns the priced request,
    or ``None`` for video-extend and lip-sync (one step or two), whose price depends on the
    source video.
    """
    path = new_path(endpoint)
    if path is not None:
        check_new_fields(body)
        request = PriceRequest.from_kling(path, body)
        if catalog is not None:
            estimate(request, catalog=catalog)
        return request
    kind = endpoint_kind(endpoint)
    check_prompts(kind, body)
    check_shape(kind, body)
    if kind in ("video-extend", "lip-sync", "advanced-lip-sync"):
        return None
    request = PriceRequest.from_kling(kind, body)
    if catalog is not None:
        estimate(request, catalog=catalog)
    return request


def normalise_body(data: dict[str, Any]) -> dict[str, Any]:
    """Spell what we accept loosely the way Kling expects it: ``mode`` ``standard`` ->
    ``std``, ``professional`` -> ``pro``; ``audio=True`` -> ``sound: "on"``."""
    if isinstance(data.get("mode"), str) and data["mode"].strip().lower() in ("standard", "professional"):
        data["mode"] = normalise_mode(data["mode"])
    if "audio" in data and "sound" not in data:
        audio = data.pop("audio")
        if audio is not None:
            data["sound"] = "on" if audio is True or str(audio).lower() in ("on", "true", "1") else "off"
    return data
