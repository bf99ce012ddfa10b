"""Create bodies from the clients' keyword arguments (one place for the Kling clients and the guards)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .models import (
    EffectsRequest,
    ImageGenerationRequest,
    ImageToVideoRequest,
    LipSyncRequest,
    MultiImageToVideoRequest,
    TextToVideoRequest,
    VideoExtendRequest,
    VirtualTryOnRequest,
)

__all__ = [
    "effects_body",
    "extend_body",
    "image_to_video_body",
    "images_body",
    "lip_sync_body",
    "multi_image_body",
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
