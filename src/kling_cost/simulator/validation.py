"""What Kling checks in a create body before accepting it (answers 1200/1201 when it fails)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import PricingError
from ..pricing import PriceRequest
from .errors import SimError

__all__ = ["check_body", "check_new_body", "price_request", "prompt_text"]

MAX_IMAGE_LIST = 4


def _has_text(source: Mapping[str, Any], field: str) -> bool:
    value = source.get(field)
    return isinstance(value, str) and bool(value.strip())


def _require(source: Mapping[str, Any], endpoint: str, *fields: str) -> None:
    """At least one of ``fields`` must be non-empty text."""
    if not any(_has_text(source, f) for f in fields):
        raise SimError(1201, f"{' or '.join(fields)} is required for {endpoint}")


def check_body(endpoint: str, body: object) -> Mapping[str, Any]:
    """Return the body if Kling would accept its shape, else raise ``SimError`` (1200/1201).

    Prompts and the fields that decide the price are checked with the same rules as the
    estimator (:meth:`PriceRequest.from_kling`), so the wording matches.
    """
    if not isinstance(body, Mapping):
        raise SimError(1200, "request body must be a JSON object")
    for field in ("callback_url", "external_task_id"):
        if field in body and body[field] is not None and not isinstance(body[field], str):
            raise SimError(1201, f"{field} must be a string")
    if endpoint == "image2video":
        _require(body, endpoint, "image", "image_tail")
    elif endpoint == "multi-image2video":
        images = body.get("image_list")
        if not isinstance(images, list) or not 1 <= len(images) <= MAX_IMAGE_LIST:
            raise SimError(1201, f"image_list must hold 1 to {MAX_IMAGE_LIST} images")
        for item in images:
            if not isinstance(item, Mapping) or not _has_text(item, "image"):
                raise SimError(1201, 'each image_list item must be {"image": <url or base64>}')
        _require(body, endpoint, "prompt")
    elif endpoint == "video-extend":
        _require(body, endpoint, "video_id")
    elif endpoint == "omni-video":
        _require(body, endpoint, "prompt")
        videos = body.get("video_list")
        if videos is not None and (
            not isinstance(videos, list)
            or len(videos) > 1
            or not all(isinstance(v, Mapping) and _has_text(v, "video_url") for v in videos)
        ):
            raise SimError(1201, 'video_list must hold at most one {"video_url": ..., "refer_type": ...}')
    elif endpoint == "advanced-lip-sync":
        _require(body, endpoint, "session_id")
    elif endpoint == "image":
        _require(body, endpoint, "prompt")
    elif endpoint == "tryon":
        _require(body, endpoint, "human_image")
        _require(body, endpoint, "cloth_image")
    elif endpoint == "effects":
        _require(body, endpoint, "effect_scene")
        if not isinstance(body.get("input"), Mapping):
            raise SimError(1201, "input is required for effects")
    elif endpoint == "lip-sync":
        raw = body.get("input")
        if not isinstance(raw, Mapping):
            raise SimError(1201, "input is required for lip-sync")
        _require(raw, endpoint, "video_id", "video_url")
        mode = raw.get("mode")
        if mode == "text2video":
            _require(raw, endpoint, "text")
        elif mode == "audio2video":
            _require(raw, endpoint, "audio_file", "audio_url")
        else:
            raise SimError(1201, f"input.mode {mode!r} is not offered; allowed: text2video, audio2video")
    return body


def price_request(endpoint: str, body: Mapping[str, Any]) -> PriceRequest:
    """The priced request of a body (not for video-extend and lip-sync); PricingError -> 1201."""
    try:
        return PriceRequest.from_kling(endpoint, body)
    except PricingError as exc:
        raise SimError(1201, str(exc)) from None


def check_new_body(family: str, model: str, body: object) -> tuple[Mapping[str, Any], PriceRequest]:
    """A new-standard create body for ``/{family}/{model}`` and its priced request, checked
    with the estimator's rules (:meth:`PriceRequest.from_kling`); 1200/1201 when Kling refuses it."""
    if not isinstance(body, Mapping):
        raise SimError(1200, "request body must be a JSON object")
    try:
        return body, PriceRequest.from_kling(f"/{family}/{model}", body)
    except PricingError as exc:
        raise SimError(1201, str(exc)) from None


def prompt_text(endpoint: str, body: Mapping[str, Any]) -> str:
    """Every prompt of a body, for content screening: ``prompt``/``negative_prompt``, lip-sync's
    ``input.text``, and the new standard's ``contents`` prompt items."""
    parts = [str(body.get(k) or "") for k in ("prompt", "negative_prompt")]
    source = body.get("input") if endpoint in ("effects", "lip-sync") else None
    if isinstance(source, Mapping):
        parts.append(str(source.get("text") or ""))
    contents = body.get("contents")
    if isinstance(contents, list):
        parts += [
            str(c.get("text") or "") for c in contents if isinstance(c, Mapping) and c.get("type") == "prompt"
        ]
    return " ".join(parts)
