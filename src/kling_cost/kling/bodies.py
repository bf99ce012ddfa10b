"""Create bodies from the clients' keyword arguments (one place for the Kling clients and the guards)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError
from .models import (
    AdvancedLipSyncRequest,
    EffectsRequest,
    ImageGenerationRequest,
    ImageToVideoRequest,
    LipSyncRequest,
    MultiImageToVideoRequest,
    TextToVideoRequest,
    VideoExtendRequest,
    VirtualTryOnRequest,
)
from .new_standard import ContentItem, NewStandardRequest

__all__ = [
    "OPTION_FIELDS",
    "advanced_lip_sync_body",
    "effects_body",
    "extend_body",
    "image_contents",
    "image_to_video_body",
    "images_body",
    "lip_sync_body",
    "motion_control_body",
    "multi_image_body",
    "new_body",
    "omni_contents",
    "text_to_video_body",
    "tryon_body",
]


def text_to_video_body(prompt: str, fields: Mapping[str, Any]) -> TextToVideoRequest:
    return TextToVideoRequest(prompt=prompt, **fields)


def image_to_video_body(image: str, prompt: str | None, fields: Mapping[str, Any]) -> ImageToVideoRequest:
    return ImageToVideoRequest(image=image, prompt=prompt, **fields)


def multi_image_body(
    images: Sequence[str | Mapping[str, Any]], prompt: str, fields: Mapping[str, Any]
) -> MultiImageToVideoRequest:
    image_list = [{"image": i} if isinstance(i, str) else dict(i) for i in images]
    return MultiImageToVideoRequest(image_list=image_list, prompt=prompt, **fields)


def extend_body(video_id: str, prompt: str | None, fields: Mapping[str, Any]) -> VideoExtendRequest:
    return VideoExtendRequest(video_id=video_id, prompt=prompt, **fields)


def lip_sync_body(
    input: Mapping[str, Any] | None,
    callback_url: str | None,
    external_task_id: str | None,
    input_fields: Mapping[str, Any],
) -> LipSyncRequest:
    merged = {**(input or {}), **input_fields}
    return LipSyncRequest.model_validate(
        {"input": merged, "callback_url": callback_url, "external_task_id": external_task_id}
    )


def effects_body(
    effect_scene: str,
    input: Mapping[str, Any] | None,
    callback_url: str | None,
    external_task_id: str | None,
    input_fields: Mapping[str, Any],
) -> EffectsRequest:
    merged = {**(input or {}), **input_fields}
    return EffectsRequest.model_validate(
        {
            "effect_scene": effect_scene,
            "input": merged,
            "callback_url": callback_url,
            "external_task_id": external_task_id,
        }
    )


def images_body(prompt: str, fields: Mapping[str, Any]) -> ImageGenerationRequest:
    return ImageGenerationRequest(prompt=prompt, **fields)


def tryon_body(human_image: str, cloth_image: str, fields: Mapping[str, Any]) -> VirtualTryOnRequest:
    return VirtualTryOnRequest(human_image=human_image, cloth_image=cloth_image, **fields)


def advanced_lip_sync_body(
    session_id: str, face_choose: Sequence[Mapping[str, Any]], fields: Mapping[str, Any]
) -> AdvancedLipSyncRequest:
    return AdvancedLipSyncRequest.model_validate(
        {"session_id": session_id, "face_choose": [dict(c) for c in face_choose], **fields}
    )


OPTION_FIELDS = frozenset({"callback_url", "external_task_id", "watermark_info", "watermark"})
"""Keyword arguments of a new-standard create that go into ``options`` (``watermark=True`` is
``watermark_info: {"enabled": true}``); every other keyword goes into ``settings``."""

Content = Mapping[str, Any] | ContentItem


def new_body(
    *,
    prompt: str | None = None,
    contents: Sequence[Content] | None = None,
    fields: Mapping[str, Any],
) -> NewStandardRequest:
    """A new-standard body: ``prompt`` (text-to-video) or ``contents``; keyword ``fields`` are
    ``settings`` (``resolution``, ``duration``, ``audio``, ``aspect_ratio``, ``multi_shot``,
    ``character_orientation``, ...) and ``options`` (:data:`OPTION_FIELDS`); ``settings=`` and
    ``options=`` mappings may also be given whole."""
    rest = dict(fields)
    settings = dict(rest.pop("settings", None) or {})
    options = dict(rest.pop("options", None) or {})
    for name, value in rest.items():
        if value is None:
            continue
        if name == "watermark":
            options["watermark_info"] = {"enabled": bool(value)}
        elif name in OPTION_FIELDS:
            options[name] = value
        elif name in ("model_name", "mode", "sound"):
            raise ConfigurationError(
                f"{name} is a legacy field; the new standard takes the model in the path, "
                "settings.resolution (720p/1080p/4k) and settings.audio (native/original/off)"
            )
        else:
            settings[name] = value
    items = None if contents is None else [c if isinstance(c, ContentItem) else dict(c) for c in contents]
    return NewStandardRequest.model_validate(
        {"prompt": prompt, "contents": items, "settings": settings, "options": options}
    )


def _with_prompt(prompt: str | None, items: list[Content]) -> list[Content]:
    return ([{"type": "prompt", "text": prompt}] if prompt else []) + items


def image_contents(
    image: str | None, prompt: str | None, last_frame: str | None, contents: Sequence[Content] | None
) -> list[Content]:
    """``contents`` of an image-to-video: the prompt, ``first_frame`` and ``last_frame``,
    then any further items given."""
    items: list[Content] = []
    if image:
        items.append({"type": "first_frame", "url": image})
    if last_frame:
        items.append({"type": "last_frame", "url": last_frame})
    return _with_prompt(prompt, items + list(contents or ()))


def omni_contents(prompt: str | None, contents: Sequence[Content] | None) -> list[Content]:
    return _with_prompt(prompt, list(contents or ()))


def motion_control_body(
    image: str, video: str, prompt: str | None, fields: Mapping[str, Any]
) -> NewStandardRequest:
    """Motion control: the character ``image``, the motion ``video`` and
    ``character_orientation`` (``image`` | ``video``, in ``fields``)."""
    items = _with_prompt(prompt, [{"type": "image", "url": image}, {"type": "video", "url": video}])
    return new_body(contents=items, fields=fields)
