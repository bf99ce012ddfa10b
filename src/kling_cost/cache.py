"""Request fingerprints for the dedup cache: identical requests must never be paid twice."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .errors import ValidationError
from .pricing.request import PriceRequest
from .pricing.standard import split_new_path

__all__ = ["CachePolicy", "fingerprint"]

# Fields that identify a delivery, not the content: two requests differing only here are
# the same generation (top-level on the legacy standard, in ``options`` on the new one).
_IGNORED = frozenset({"external_task_id", "callback_url"})
_PRICED_SETTINGS = ("resolution", "duration")
"""New-standard settings that the price fields already hash, normalised (``720p`` = absent)."""


@dataclass(frozen=True)
class CachePolicy:
    """How the dedup cache behaves.

    ``enabled``: reuse identical requests (off for users who want variations of one prompt).
    ``ttl``: how long a succeeded result is reused (Kling's result URLs live 30 days).
    ``lease``: how long an in-flight claim holds before another caller may pay for it.
    ``wait``: how long, from its claim, an identical request in flight may take to be accepted
    by Kling before a caller waiting for it asks Kling about it and, if Kling never got it,
    sends its own (a caller that gave up, or whose hold was freed, is not waited for at all).
    ``wait_poll``: seconds between checks while waiting for an identical request in flight.
    """

    enabled: bool = True
    ttl: timedelta = timedelta(days=7)
    lease: timedelta = timedelta(minutes=30)
    wait: timedelta = timedelta(minutes=2)
    wait_poll: float = 1.0

    def __post_init__(self) -> None:
        for name in ("ttl", "lease", "wait"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise ValidationError(f"CachePolicy.{name} must be a positive timedelta, not {value!r}")
        if (
            isinstance(self.wait_poll, bool)
            or not isinstance(self.wait_poll, (int, float))
            or not (self.wait_poll > 0)
        ):
            raise ValidationError(
                f"CachePolicy.wait_poll must be a positive number of seconds, not {self.wait_poll!r}"
            )


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFC", value).split())
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def fingerprint(endpoint: str, body: Mapping[str, Any], price: PriceRequest | None = None) -> str:
    """SHA-256 over the endpoint, the normalised price fields and every content field.

    Prompts are compared after Unicode normalisation and whitespace folding; ``mode``
    aliases, ``duration`` given as a number or a string, and field order do not matter.
    ``price`` is the request as priced (with the catalog's default model filled in), so a
    request naming Kling's default model matches one that names none.
    """
    if price is None:
        try:
            price = PriceRequest.from_kling(endpoint, body)
        except ValueError:
            price = None
    priced = {} if price is None else price.to_dict()
    if _is_new(endpoint):
        content = _new_content(body)
    else:
        content = {k: v for k, v in body.items() if k not in _IGNORED and v is not None}
        for field in ("mode", "duration", "model_name", "sound", "n"):
            content.pop(field, None)
    doc = {"endpoint": endpoint, "price": priced, "content": _normal(content)}
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_new(endpoint: str) -> bool:
    try:
        return split_new_path(endpoint) is not None
    except ValueError:
        return False


def _new_content(body: Mapping[str, Any]) -> dict[str, Any]:
    """A new-standard body without what identifies its delivery (``options.external_task_id``,
    ``options.callback_url``) or is hashed as a price field (``settings.resolution``,
    ``settings.duration``); ``settings.audio`` stays (``original`` and ``off`` price alike but
    are different videos)."""
    content = {k: v for k, v in body.items() if v is not None}
    options = content.get("options")
    if isinstance(options, Mapping):
        content["options"] = {k: v for k, v in options.items() if k not in _IGNORED}
    settings = content.get("settings")
    if isinstance(settings, Mapping):
        content["settings"] = {k: v for k, v in settings.items() if k not in _PRICED_SETTINGS}
    for name in ("options", "settings"):
        if not content.get(name):
            content.pop(name, None)
    return content
