"""What a request is, for pricing: the Kling fields that decide its cost, normalised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import PricingError
from .fields import MODED, NO_MODEL, RESOLUTION_OF, as_audio, as_int, duration_for, mode_for, normalise_mode
from .standard import ALWAYS_AUDIO, NEW_FAMILIES, new_standard_fields, output_seconds, split_new_path

__all__ = ["ENDPOINTS", "MAX_PROMPT", "PriceRequest", "normalise_endpoint", "normalise_mode"]

ENDPOINTS: dict[str, str] = {
    "text2video": "video",
    "image2video": "video",
    "multi-image2video": "video",
    "video-extend": "extend",
    "lip-sync": "lipsync",
    "effects": "effects",
    "image": "image",
    "tryon": "tryon",
    "omni-video": "video",
    "motion-control": "motion",
    "advanced-lip-sync": "lipsync",
    "avatar": "avatar",
    "text-to-audio": "audio",
    "video-to-audio": "audio",
    "multi-image2image": "image",
    "omni-image": "image",
}
"""Kling endpoint kinds and the price kind each is billed as. The new standard's
``/text-to-video/{model}`` and ``/image-to-video/{model}`` are text2video and image2video."""

_ENDPOINT_ALIASES = {
    "video": "text2video",
    "t2v": "text2video",
    "i2v": "image2video",
    "extend": "video-extend",
    "lipsync": "lip-sync",
    "images": "image",
    "generations": "image",
    "images/generations": "image",
    "image-generation": "image",
    "try-on": "tryon",
    "virtual-try-on": "tryon",
    "kolors-virtual-try-on": "tryon",
    "text-to-video": "text2video",
    "image-to-video": "image2video",
    "multi-image-to-video": "multi-image2video",
    "omni": "omni-video",
    "motion": "motion-control",
    "avatar/image2video": "avatar",
    "multi-image-to-image": "multi-image2image",
}

MAX_PROMPT = 2500
MAX_IMAGES = 9


def _endpoint_key(value: object) -> str:
    """A kind, alias or legacy path (``/v1/videos/text2video``, ``/v1/images/generations``)."""
    key = str(value).strip().lower().replace("_", "-")
    if "://" in key:
        key = key.split("://", 1)[1].partition("/")[2]
    key = key.split("?", 1)[0].strip("/")
    key = key.removeprefix("v1/")
    for prefix in ("videos/", "images/", "audio/"):
        if key.startswith(prefix) and key != prefix:
            key = key.removeprefix(prefix)
            break
    return key


def normalise_endpoint(value: object) -> str:
    """The endpoint kind of a name, alias or legacy path; a new-standard path
    (``/text-to-video/kling-3.0``) gives its kind (``text2video``)."""
    if isinstance(value, str):
        new = split_new_path(value)
        if new is not None:
            return NEW_FAMILIES[new[0]][0]
    return _normalise_endpoint(value)


def _normalise_endpoint(value: object) -> str:
    key = _endpoint_key(value)
    key = _ENDPOINT_ALIASES.get(key, key)
    if key not in ENDPOINTS:
        raise PricingError(
            f"kind {value!r} is not a Kling generation endpoint; allowed: {', '.join(ENDPOINTS)}",
            field="kind",
            value=value,
            allowed=tuple(ENDPOINTS),
        )
    return key


def _path_model(kind: str, model: str | None) -> str | None:
    """The model of a new-standard path given as the kind (``/motion-control/kling-3.0``)."""
    new = split_new_path(kind) if isinstance(kind, str) else None
    if new is None:
        return model
    if model is not None and model != new[1]:
        raise PricingError(
            f"model {model} and the path's model {new[1]} disagree; give one of them",
            field="model",
            value=model,
            allowed=(new[1],),
        )
    return new[1]


@dataclass(frozen=True)
class PriceRequest:
    """The cost-relevant fields of one Kling request, normalised and checked for shape.

    ``endpoint`` is the Kling endpoint kind (``text2video``, ``image``, ``tryon``, ...);
    ``kind`` is the price kind it is billed as. ``model`` is ``None`` when not given: the
    catalog's default model for the kind applies (Kling's own default in ``kling-api``), or,
    in a catalog without one, any model. Whether a model, mode or duration is actually
    offered is decided by the catalog, in :func:`kling_cost.pricing.estimate`.

    ``mode`` is the video resolution (``std`` 720p, ``pro`` 1080p, ``4k``); images have their
    own ``image_resolution`` (1k, 2k, 4k). ``video_input`` is a reference video (omni models),
    ``voice_control`` voices given to kling-2.6, ``multi_image`` several input images.
    Motion control (``kind == "motion"``) is billed on its output's length: its ``duration``
    is the longest output (:data:`MOTION_CONTROL_MAX_SECONDS`) until :meth:`for_output` says
    how long the video Kling made is.
    """

    endpoint: str
    model: str | None
    mode: str
    duration: int | None
    audio: bool = False
    n: int = 1
    image_input: bool = False
    effect: str | None = None
    image_resolution: str | None = None
    video_input: bool = False
    voice_control: bool = False
    multi_image: bool = False

    @property
    def kind(self) -> str:
        return ENDPOINTS[self.endpoint]

    @property
    def resolution(self) -> str | None:
        """``720p``/``1080p``/``4k`` of a video, ``1k``/``2k``/``4k`` of an image, else ``None``."""
        if self.kind == "image":
            return self.image_resolution or "1k"
        return RESOLUTION_OF.get(self.mode) if self.kind in MODED else None

    def check_model(self) -> None:
        """Omni video and motion control have no default model (the new standard's path names
        it): without one, raise :class:`PricingError` listing the models."""
        if self.model is None and self.endpoint in ("omni-video", "motion-control"):
            models = NEW_FAMILIES[self.endpoint][1]
            raise PricingError(
                f"{self.endpoint} needs a model (Kling has no default); allowed: {', '.join(models)} "
                "(or their legacy model_name)",
                field="model",
                value=None,
                allowed=models,
            )

    @property
    def billed_on_output(self) -> bool:
        """Whether Kling bills the output's length rather than a requested duration (motion
        control): reserve this request's estimate, commit :meth:`for_output`'s."""
        return self.kind == "motion"

    @classmethod
    def build(
        cls,
        kind: str = "text2video",
        *,
        model: str | None = None,
        mode: object = None,
        duration: object = None,
        audio: object = False,
        n: object = 1,
        image_input: bool = False,
        effect: str | None = None,
        resolution: object = None,
        video_input: bool = False,
        voice_control: bool = False,
        multi_image: bool = False,
    ) -> PriceRequest:
        """Normalise loose inputs (aliases, strings) into a request; shape errors raise.

        ``mode`` defaults to ``std``; ``resolution`` (720p/1080p/4k, or 1k/2k/4k for images)
        may be given instead. A model whose audio is always on (kling-3.0-turbo) gets ``audio``.
        """
        endpoint = normalise_endpoint(kind)
        price_kind = ENDPOINTS[endpoint]
        if model == "":
            model = None
        elif model is not None and not isinstance(model, str):
            raise PricingError(f"model {model!r} must be a string", field="model", value=model)
        model = _path_model(kind, model)
        if price_kind in NO_MODEL:
            model = None
        dur = duration_for(price_kind, endpoint, duration)
        count = as_int(n, "n")
        if price_kind == "image":
            if not 1 <= count <= MAX_IMAGES:
                raise PricingError(
                    f"n {count} is not offered; allowed: 1 to {MAX_IMAGES}",
                    field="n",
                    value=count,
                    allowed=tuple(range(1, MAX_IMAGES + 1)),
                )
        elif count != 1:
            raise PricingError(
                f"n {count} is only offered for image generation; use 1 for {endpoint}",
                field="n",
                value=count,
                allowed=(1,),
            )
        final_mode, image_res = mode_for(price_kind, endpoint, mode, resolution)
        multi = bool(multi_image) or endpoint == "multi-image2image"
        return cls(
            endpoint=endpoint,
            model=model,
            mode=final_mode,
            duration=dur,
            audio=as_audio(audio) or (price_kind == "video" and model in ALWAYS_AUDIO),
            n=count,
            image_input=bool(image_input) or multi,
            effect=effect,
            image_resolution=image_res,
            video_input=bool(video_input),
            voice_control=bool(voice_control),
            multi_image=multi,
        )

    @classmethod
    def from_kling(cls, endpoint: str, body: Mapping[str, Any]) -> PriceRequest:
        """The request a Kling JSON create body describes, on either API standard.

        ``endpoint`` is a new-standard path (``/text-to-video/kling-3.0``: the body has
        ``prompt`` or ``contents`` + ``settings`` + ``options``) or a legacy kind or path
        (``text2video``, ``/v1/videos/omni-video``: the body has ``model_name``, ``mode``,
        ``duration`` as a string, ``sound``, as Kling spells them).
        """
        new = split_new_path(endpoint) if isinstance(endpoint, str) else None
        if new is not None:
            fields = new_standard_fields(new[0], new[1], body)
            return cls.build(fields.pop("kind"), **fields)
        kind = _normalise_endpoint(endpoint)
        check_prompts(kind, body)
        source: Mapping[str, Any] = body
        if kind in {"effects", "lip-sync"}:
            raw_input = body.get("input")
            source = raw_input if isinstance(raw_input, Mapping) else {}
        audio: object = source.get("sound", False)
        if "audio" in source:
            audio = source["audio"]
        price_kind = ENDPOINTS[kind]
        videos = source.get("video_list") if kind == "omni-video" else None
        images = source.get("image") or source.get("image_reference")
        if price_kind == "image":  # omni-image takes its references as image_list
            images = images or source.get("image_list") or source.get("subject_image_list")
        return cls.build(
            kind,
            model=source.get("model_name") or source.get("model") or None,
            # a lip-sync's input.mode is what drives it (text2video/audio2video), not a price mode
            mode=None if price_kind == "lipsync" else source.get("mode") or None,
            duration=source.get("duration"),
            audio=audio,
            n=source.get("n", 1),
            image_input=bool(images),
            effect=body.get("effect_scene") if kind == "effects" else None,
            resolution=source.get("resolution") if price_kind == "image" else None,
            video_input=isinstance(videos, list) and bool(videos),
            voice_control=bool(source.get("voice_list")),
        )

    def with_(self, **changes: Any) -> PriceRequest:
        """A copy with some fields changed (used by the advisor for cheaper alternatives)."""
        return replace(self, **changes)

    def for_output(self, seconds: object) -> PriceRequest:
        """This request at the length of the video Kling made (``"10.04"``, ``10``): whole
        seconds, rounded half up, as Kling bills motion control on its output."""
        return replace(self, duration=output_seconds(seconds))

    def label(self) -> str:
        """``kling-v2-6 std 5s audio``: the request in a few words, for messages."""
        parts = [p for p in (self.model, self.mode) if p]
        if self.kind == "image":
            if self.image_resolution:
                parts.append(self.image_resolution)
            parts.append(f"n={self.n}")
        elif self.duration is not None and self.kind in ("video", "effects", "lipsync", "motion", "avatar"):
            parts.append(f"{self.duration}s")
        if self.audio:
            parts.append("audio")
        if self.video_input:
            parts.append("video input")
        if self.voice_control:
            parts.append("voice control")
        return " ".join(parts)

    def charge_fields(self, default_model: str | None = None) -> dict[str, Any]:
        """What a charge records about this request, normalised as it was priced: ``model``
        (``default_model`` when the request names none), ``mode``, ``duration``, ``audio``, ``n``."""
        return {
            "model": self.model or default_model,
            "mode": self.mode,
            "duration": self.duration,
            "audio": self.audio,
            "n": self.n,
        }

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON, as the dedup fingerprint hashes it: the 2026 flags
        (``video_input``, ``voice_control``, ``multi_image``) appear only when set, and an
        image's resolution not at all (the body's own ``resolution`` is hashed with its
        content), so a request without them keeps the fingerprint it had before they existed.
        :meth:`Estimate.to_dict` adds the resolution."""
        data: dict[str, Any] = {
            "kind": self.endpoint,
            "model": self.model,
            "mode": self.mode,
            "duration": self.duration,
            "audio": self.audio,
            "n": self.n,
            "image_input": self.image_input,
            "effect": self.effect,
        }
        for name in ("video_input", "voice_control", "multi_image"):
            if getattr(self, name):
                data[name] = True
        return data


def check_prompts(endpoint: str, body: Mapping[str, Any]) -> None:
    """Kling's prompt rules: text2video needs a prompt; prompts are at most 2500 characters."""
    for name in ("prompt", "negative_prompt"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise PricingError(f"{name} must be text", field=name, value=value)
        if len(value) > MAX_PROMPT:
            raise PricingError(
                f"{name} has {len(value)} characters; at most {MAX_PROMPT} are allowed",
                field=name,
                value=len(value),
            )
    if endpoint == "text2video" and not str(body.get("prompt") or "").strip():
        raise PricingError(
            "prompt must not be empty for text2video", field="prompt", value=body.get("prompt")
        )
