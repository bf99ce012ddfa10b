"""Kling's endpoints and the rules a create body must follow before it is sent.

Public because more than the client needs them: the guard validates and prices a body with
these rules before it reserves, and batch files name endpoints by the same aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import PricingError
from ..pricing import Catalog, PriceRequest, estimate
from ..pricing.request import check_prompts, normalise_mode

__all__ = [
    "ACCOUNT_COSTS_PATH",
    "BASE_URLS",
    "CREATE_PATHS",
    "ENV_BASE_URL",
    "check_shape",
    "endpoint_kind",
    "normalise_body",
    "validate_create",
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
}
"""Create path of each endpoint kind; query is ``<path>/{id}``, list is ``<path>?pageNum&pageSize``."""

ENV_BASE_URL = "KLING_BASE_URL"
"""Where the base URL comes from when none is given (as the CLI's ``--base-url``)."""

ACCOUNT_COSTS_PATH = "/account/costs"
MAX_IMAGE_LIST = 4


def endpoint_kind(endpoint: str) -> str:
    """Normalise an endpoint name or alias (``t2v``, ``images/generations``...) to its kind."""
    return PriceRequest.build(endpoint).endpoint if endpoint not in CREATE_PATHS else endpoint


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
    checked with the estimator's rules and wording. Returns the priced request, or ``None``
    for video-extend and lip-sync, whose price depends on the source video.
    """
    kind = endpoint_kind(endpoint)
    check_prompts(kind, body)
    check_shape(kind, body)
    if kind in ("video-extend", "lip-sync"):
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
