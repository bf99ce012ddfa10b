"""What a request is, for pricing: the Kling fields that decide its cost, normalised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import PricingError

__all__ = ["ENDPOINTS", "MAX_PROMPT", "PriceRequest", "normalise_mode"]

ENDPOINTS: dict[str, str] = {
    "text2video": "video",
    "image2video": "video",
    "multi-image2video": "video",
    "video-extend": "extend",
    "lip-sync": "lipsync",
    "effects": "effects",
    "image": "image",
    "tryon": "tryon",
}
"""Kling endpoint kinds and the price kind each is billed as."""

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
}

_MODE_ALIASES = {"std": "std", "standard": "std", "pro": "pro", "professional": "pro"}

MAX_PROMPT = 2500
MAX_IMAGES = 9


def normalise_mode(mode: object) -> str:
    """``std``/``pro``, accepting ``standard``/``professional`` as aliases."""
    key = str(mode).strip().lower()
    if key not in _MODE_ALIASES:
        raise PricingError(
            f"mode {mode!r} is not offered; allowed: std, pro (or standard, professional)",
            field="mode",
            value=mode,
            allowed=("std", "pro"),
        )
    return _MODE_ALIASES[key]


def _normalise_endpoint(value: object) -> str:
    key = str(value).strip().lower().replace("_", "-")
    key = _ENDPOINT_ALIASES.get(key, key)
    if key not in ENDPOINTS:
        raise PricingError(
            f"kind {value!r} is not a Kling generation endpoint; allowed: {', '.join(ENDPOINTS)}",
            field="kind",
            value=value,
            allowed=tuple(ENDPOINTS),
        )
    return key


def _as_int(value: object, field: str) -> int:
    if isinstance(value, bool):
        raise PricingError(f"{field} must be a whole number, not {value!r}", field=field, value=value)
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit():  # ASCII: "²".isdigit() is True but int("²") fails
        if len(text) > 18:
            raise PricingError(f"{field} {text[:20]}... is far too large", field=field, value=text[:20])
        return int(text)
    shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
    raise PricingError(f"{field} must be a whole number, not {shown!r}", field=field, value=shown)


def _as_audio(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0", ""):
        return False
    raise PricingError(
        f"sound {value!r} is not offered; allowed: on, off",
        field="sound",
        value=value,
        allowed=("on", "off"),
    )


@dataclass(frozen=True)
class PriceRequest:
    """The cost-relevant fields of one Kling request, normalised and checked for shape.

    ``endpoint`` is the Kling endpoint kind (``text2video``, ``image``, ``tryon``, ...);
    ``kind`` is the price kind it is billed as. ``model`` is ``None`` when not given: the
    catalog's default model for the kind applies (Kling's own default in ``kling-api``), or,
    in a catalog without one, any model. Whether a model, mode or duration is actually
    offered is decided by the catalog, in :func:`kling_cost.pricing.estimate`.
    """

    endpoint: str
    model: str | None
    mode: str
    duration: int | None
    audio: bool = False
    n: int = 1
    image_input: bool = False
    effect: str | None = None

    @property
    def kind(self) -> str:
        return ENDPOINTS[self.endpoint]

    @classmethod
    def build(
        cls,
        kind: str = "text2video",
        *,
        model: str | None = None,
        mode: object = "std",
        duration: object = None,
        audio: object = False,
        n: object = 1,
        image_input: bool = False,
        effect: str | None = None,
    ) -> PriceRequest:
        """Normalise loose inputs (aliases, strings) into a request; shape errors raise."""
        endpoint = _normalise_endpoint(kind)
        price_kind = ENDPOINTS[endpoint]
        if model == "":
            model = None
        elif model is not None and not isinstance(model, str):
            raise PricingError(f"model {model!r} must be a string", field="model", value=model)
        if price_kind == "lipsync":
            model = None
        dur: int | None
        if duration is None or duration == "":
            dur = 5 if price_kind in ("video", "effects") else None
        else:
            dur = _as_int(duration, "duration")
            if dur <= 0:
                raise PricingError(
                    f"duration {dur} must be a positive number of seconds",
                    field="duration",
                    value=dur,
                )
        if price_kind == "lipsync" and dur is None:
            raise PricingError(
                "lip-sync is priced per 5 s of video: give the video's duration in seconds",
                field="duration",
                value=None,
            )
        count = _as_int(n, "n")
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
        return cls(
            endpoint=endpoint,
            model=model,
            mode=normalise_mode(mode),
            duration=dur,
            audio=_as_audio(audio),
            n=count,
            image_input=bool(image_input),
            effect=effect,
        )

    @classmethod
    def from_kling(cls, endpoint: str, body: Mapping[str, Any]) -> PriceRequest:
        """The request a Kling JSON create body describes (field names as Kling spells them)."""
        kind = _normalise_endpoint(endpoint)
        check_prompts(kind, body)
        source: Mapping[str, Any] = body
        if kind in {"effects", "lip-sync"}:
            raw_input = body.get("input")
            source = raw_input if isinstance(raw_input, Mapping) else {}
        audio: object = source.get("sound", False)
        if "audio" in source:
            audio = source["audio"]
        return cls.build(
            kind,
            model=source.get("model_name") or source.get("model") or None,
            mode=source.get("mode") or "std",
            duration=source.get("duration"),
            audio=audio,
            n=source.get("n", 1),
            image_input=bool(source.get("image")) or bool(source.get("image_reference")),
            effect=body.get("effect_scene") if kind == "effects" else None,
        )

    def with_(self, **changes: Any) -> PriceRequest:
        """A copy with some fields changed (used by the advisor for cheaper alternatives)."""
        return replace(self, **changes)

    def label(self) -> str:
        """``kling-v2-6 std 5s audio``: the request in a few words, for messages."""
        parts = [p for p in (self.model, self.mode) if p]
        if self.kind == "image":
            parts.append(f"n={self.n}")
        elif self.duration is not None and self.kind in ("video", "effects", "lipsync"):
            parts.append(f"{self.duration}s")
        if self.audio:
            parts.append("audio")
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
        return {
            "kind": self.endpoint,
            "model": self.model,
            "mode": self.mode,
            "duration": self.duration,
            "audio": self.audio,
            "n": self.n,
            "image_input": self.image_input,
            "effect": self.effect,
        }


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
