"""The fields of a price request, normalised: mode or resolution, duration, sound, counts."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

from ..errors import PricingError
from .catalog import IMAGE_RESOLUTIONS
from .standard import MOTION_CONTROL_MAX_SECONDS, RESOLUTIONS

__all__ = [
    "MODED",
    "NO_MODEL",
    "RESOLUTION_OF",
    "as_audio",
    "as_int",
    "duration_for",
    "mode_for",
    "normalise_mode",
    "positive_duration",
    "started_seconds",
]

MAX_SOURCE_SECONDS = 86_400
"""The longest source video a lip-sync is priced for (a day; Kling's own limit is far lower)."""

_MODE_ALIASES = {
    "std": "std",
    "standard": "std",
    "pro": "pro",
    "professional": "pro",
    "4k": "4k",
    **RESOLUTIONS,
}
RESOLUTION_OF = {mode: res for res, mode in RESOLUTIONS.items()}
NO_MODEL = ("lipsync", "avatar", "audio")
MODED = ("video", "extend", "effects", "motion", "avatar")
"""Price kinds whose ``mode`` (video resolution) matters."""


def normalise_mode(mode: object) -> str:
    """``std``/``pro``/``4k``, accepting ``standard``/``professional`` and the resolutions
    ``720p``/``1080p`` as aliases. Which model offers which mode is the catalog's business."""
    key = str(mode).strip().lower()
    if key not in _MODE_ALIASES:
        raise PricingError(
            f"mode {mode!r} is not offered; allowed: std, pro (or standard, professional; "
            "720p, 1080p), and 4k on kling-3.0 and kling-3.0-omni",
            field="mode",
            value=mode,
            allowed=("std", "pro"),
        )
    return _MODE_ALIASES[key]


def _image_resolution(value: object) -> str:
    key = str(value).strip().lower()
    if key not in IMAGE_RESOLUTIONS:
        raise PricingError(
            f"resolution {value!r} is not offered for images; allowed: {', '.join(IMAGE_RESOLUTIONS)}",
            field="resolution",
            value=value,
            allowed=IMAGE_RESOLUTIONS,
        )
    return key


def _video_resolution(value: object) -> str:
    key = str(value).strip().lower()
    if key not in RESOLUTIONS:
        raise PricingError(
            f"resolution {value!r} is not offered; allowed: {', '.join(RESOLUTIONS)}",
            field="resolution",
            value=value,
            allowed=tuple(RESOLUTIONS),
        )
    return RESOLUTIONS[key]


def as_int(value: object, field: str) -> int:
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


def as_audio(value: object) -> bool:
    """Generated sound on or off: ``sound`` on/off (legacy), ``audio`` native/original/off
    (new standard; ``original`` keeps an input video's sound, nothing is generated)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1", "native"):
        return True
    if text in ("off", "false", "no", "0", "", "original"):
        return False
    raise PricingError(
        f"sound {value!r} is not offered; allowed: on, off (audio: native, original, off)",
        field="sound",
        value=value,
        allowed=("on", "off"),
    )


def positive_duration(duration: object) -> int:
    dur = as_int(duration, "duration")
    if dur <= 0:
        raise PricingError(
            f"duration {dur} must be a positive number of seconds",
            field="duration",
            value=dur,
        )
    return dur


def started_seconds(duration: object) -> int:
    """A source video's length in seconds (``5.04``, ``"5.04"``, ``10``; a video lasts what
    it lasts, not a whole number) as the whole seconds it has started: rounded up, so that
    Kling's blocks "per started 5 s" count as Kling counts them (5.01 s is two blocks)."""
    if isinstance(duration, bool) or not isinstance(duration, (int, str, Decimal, float)):
        raise PricingError(
            f"duration must be a number of seconds, not {duration!r}", field="duration", value=duration
        )
    if isinstance(duration, int):
        return positive_duration(duration)
    text = repr(duration) if isinstance(duration, float) else str(duration).strip()
    try:
        seconds = Decimal(text) if text.isascii() and len(text) <= 40 else None
    except InvalidOperation:
        seconds = None
    if seconds is None or not seconds.is_finite() or not 0 < seconds <= MAX_SOURCE_SECONDS:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise PricingError(
            f"duration {shown!r} must be a number of seconds above 0 and at most {MAX_SOURCE_SECONDS}",
            field="duration",
            value=shown,
        )
    return int(seconds.to_integral_value(rounding=ROUND_CEILING))


def duration_for(price_kind: str, endpoint: str, duration: object) -> int | None:
    """The request's duration, with the kind's default and limits."""
    if duration is None or duration == "":
        if price_kind == "motion":
            return MOTION_CONTROL_MAX_SECONDS  # reserved at its longest, committed on the output
        if price_kind in ("lipsync", "avatar"):
            what = "per 5 s of video" if price_kind == "lipsync" else "per second of video"
            name = "lip-sync" if price_kind == "lipsync" else endpoint
            raise PricingError(
                f"{name} is priced {what}: give the video's duration in seconds",
                field="duration",
                value=None,
            )
        return 5 if price_kind in ("video", "effects") else None
    dur = started_seconds(duration) if price_kind == "lipsync" else positive_duration(duration)
    if price_kind == "motion" and dur > MOTION_CONTROL_MAX_SECONDS:
        raise PricingError(
            f"duration {dur} is longer than a motion-control output can be; "
            f"allowed: 1 to {MOTION_CONTROL_MAX_SECONDS}",
            field="duration",
            value=dur,
            allowed=tuple(str(d) for d in range(1, MOTION_CONTROL_MAX_SECONDS + 1)),
        )
    return dur


def mode_for(price_kind: str, endpoint: str, mode: object, resolution: object) -> tuple[str, str | None]:
    """``(mode, image resolution)`` from ``mode`` and ``resolution`` (720p/1080p/4k is the
    mode of a video; 1k/2k/4k is an image's own field)."""
    given = mode not in (None, "")
    final = normalise_mode(mode) if given else "std"
    if resolution in (None, ""):
        return final, None
    if price_kind == "image":
        return final, _image_resolution(resolution)
    if price_kind not in MODED:
        raise PricingError(
            f"resolution is not a price field of {endpoint}",
            field="resolution",
            value=resolution,
            allowed=(),
        )
    from_resolution = _video_resolution(resolution)
    if given and final != from_resolution:
        raise PricingError(
            f"mode {final} and resolution {resolution} disagree ({RESOLUTION_OF[final]} is {final}); "
            "give one of them",
            field="resolution",
            value=resolution,
            allowed=(RESOLUTION_OF[final],),
        )
    return from_resolution, None
