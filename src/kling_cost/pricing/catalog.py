"""The price catalog: dated entries that each price one family of requests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from ..errors import PricingError
from ..money import MONEY

__all__ = ["IMAGE_RESOLUTIONS", "KINDS", "MODES", "PACKS", "Catalog", "PriceEntry"]

KINDS = ("video", "extend", "lipsync", "effects", "image", "tryon", "motion", "avatar", "audio")
"""Price kinds. text2video, image2video, multi-image2video and omni-video (both API standards)
are all priced as ``video``; motion control as ``motion`` (billed on the output's length)."""

MODES = ("std", "pro", "4k")
"""Video modes: ``std`` is 720p, ``pro`` 1080p, ``4k`` (Kling 3.0 and 3.0 Omni only)."""

IMAGE_RESOLUTIONS = ("1k", "2k", "4k")
"""Image resolutions (Kling's ``resolution`` of image generation; 1k is Kling's default)."""

MODEL_GROUP = {
    "extend": "video",
    "effects": "video",
    "lipsync": "video",
    "motion": "video",
    "avatar": "video",
    "audio": "video",
}
"""The ``[models]`` list a price kind's model ids come from (others: the kind's own)."""

PACKS = ("video", "image", "tryon")
"""Kling resource-pack types; each price kind is paid from one of them."""

DEFAULT_PACK = {
    "video": "video",
    "extend": "video",
    "lipsync": "video",
    "effects": "video",
    "image": "image",
    "tryon": "tryon",
    "motion": "video",
    "avatar": "video",
    "audio": "video",
}

BASES = ("amount", "per_second", "per_image", "per_block")


@dataclass(frozen=True)
class PriceEntry:
    """One price, in force from ``effective_from``, for the requests its match fields select.

    A match field left as ``None`` matches any value, except ``audio`` which defaults to
    ``False`` (an entry without ``audio = true`` never prices a request with sound).
    ``modes`` are std (720p), pro (1080p) and 4k; ``resolutions`` are image resolutions
    (1k, 2k, 4k); ``video_input`` (a reference video, omni models), ``voice_control`` and
    ``multi_image`` (several input images) narrow an entry to requests with or without them.
    Exactly one basis is set: ``amount`` (per task), ``per_second`` (x duration),
    ``per_image`` (x n) or ``per_block`` (x started blocks of ``block_seconds``).
    """

    kind: str
    basis: str
    rate: Decimal
    effective_from: date
    source: str
    models: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    durations: tuple[int, ...] | None = None
    audio: bool = False
    image_input: bool | None = None
    effects: tuple[str, ...] | None = None
    block_seconds: int | None = None
    pack: str = "video"
    origin: str = ""
    """Where the entry was defined (``file:line``), for messages."""
    resolutions: tuple[str, ...] | None = None
    video_input: bool | None = None
    voice_control: bool | None = None
    multi_image: bool | None = None

    @property
    def specificity(self) -> int:
        fields = (
            self.models,
            self.modes,
            self.durations,
            self.image_input,
            self.effects,
            self.resolutions,
            self.video_input,
            self.voice_control,
            self.multi_image,
        )
        return sum(f is not None for f in fields)

    def quantity(self, *, duration: int | None, n: int) -> int:
        """How many times ``rate`` is charged for a request with this duration and n."""
        if self.basis == "amount":
            return 1
        if self.basis == "per_image":
            return n
        if duration is None:
            raise PricingError(
                f"duration is required: {self.describe()} is priced {self.rate_text()}",
                field="duration",
                value=None,
                allowed=self.durations or (),
            )
        if self.basis == "per_second":
            return duration
        block = self.block_seconds or 1  # the loader requires block_seconds for per_block
        return math.ceil(duration / block)

    def describe(self) -> str:
        """Short human description of the match fields: ``kling-v2-6 pro audio 5/10s``."""
        parts = [self.kind]
        if self.models:
            parts.append("/".join(self.models))
        if self.modes:
            parts.append("/".join(self.modes))
        if self.resolutions:
            parts.append("/".join(self.resolutions))
        if self.audio:
            parts.append("audio")
        flags = (
            (self.video_input, "video input"),
            (self.voice_control, "voice control"),
            (self.multi_image, "multi-image"),
        )
        parts.extend(text if flag else f"no {text}" for flag, text in flags if flag is not None)
        if self.image_input is not None:
            parts.append("image-to-image" if self.image_input else "text-to-image")
        if self.effects:
            parts.append("/".join(self.effects))
        if self.durations:
            parts.append("/".join(str(d) for d in self.durations) + "s")
        return " ".join(parts)

    def rate_text(self) -> str:
        per = {
            "amount": "per task",
            "per_second": "per second",
            "per_image": "per image",
            "per_block": f"per started {self.block_seconds}s",
        }[self.basis]
        return f"{self.rate} {per}"


@dataclass(frozen=True)
class Catalog:
    """A named price list in one unit (``credits`` or ``units``), with dated entries."""

    name: str
    unit: str
    entries: tuple[PriceEntry, ...]
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)
    usd_per_unit: dict[str, Decimal] = field(default_factory=dict)
    description: str = ""
    path: str | None = None
    defaults: dict[str, str] = field(default_factory=dict)
    """Model used for a request that names none, per price kind (Kling's defaults)."""

    def known_models(self, kind: str) -> tuple[str, ...]:
        """Model ids Kling offers for a price kind (extend/effects use video models)."""
        return self.models.get(MODEL_GROUP.get(kind, kind), ())

    def in_force(self, as_of: date) -> list[PriceEntry]:
        """Entries whose ``effective_from`` is on or before ``as_of``."""
        return [e for e in self.entries if e.effective_from <= as_of]

    def versions(self) -> list[list[PriceEntry]]:
        """Entries grouped by identical match fields, oldest first: a price and its revisions."""
        groups: dict[tuple[object, ...], list[PriceEntry]] = {}
        for entry in self.entries:
            groups.setdefault(match_key(entry), []).append(entry)
        return [sorted(g, key=lambda e: e.effective_from) for g in groups.values()]

    def current(self, as_of: date) -> list[PriceEntry]:
        """The entries that price requests on ``as_of``: in force and not superseded by a
        newer entry that covers every request they match."""
        live = self.in_force(as_of)
        return [
            e for e in live if not any(f.effective_from > e.effective_from and covers(f, e) for f in live)
        ]

    def usd(self, amount: Decimal, pack: str) -> Decimal | None:
        rate = self.usd_per_unit.get(pack)
        return None if rate is None else MONEY.multiply(amount, rate)


def match_key(entry: PriceEntry) -> tuple[object, ...]:
    return (
        entry.kind,
        entry.models,
        entry.modes,
        entry.durations,
        entry.audio,
        entry.image_input,
        entry.effects,
        entry.resolutions,
        entry.video_input,
        entry.voice_control,
        entry.multi_image,
    )


def covers(newer: PriceEntry, older: PriceEntry) -> bool:
    """Whether every request ``older`` matches is also matched by ``newer``."""
    if newer.kind != older.kind or newer.audio != older.audio:
        return False
    pairs: tuple[tuple[tuple[object, ...] | None, tuple[object, ...] | None], ...] = (
        (newer.models, older.models),
        (newer.modes, older.modes),
        (newer.durations, older.durations),
        (newer.effects, older.effects),
        (newer.resolutions, older.resolutions),
    )
    for wide, narrow in pairs:
        if wide is not None and (narrow is None or not set(narrow) <= set(wide)):
            return False
    flags = (
        (newer.image_input, older.image_input),
        (newer.video_input, older.video_input),
        (newer.voice_control, older.voice_control),
        (newer.multi_image, older.multi_image),
    )
    return all(wide is None or wide == narrow for wide, narrow in flags)


def choose(candidates: Sequence[PriceEntry]) -> PriceEntry:
    """The entry that prices a request among those that match it and are in force.

    The newest ``effective_from`` wins (a newer price supersedes an older one); among entries
    from the same day the most specific wins, then the one defined last (an override).
    """
    best_index = max(
        range(len(candidates)),
        key=lambda i: (candidates[i].effective_from, candidates[i].specificity, i),
    )
    return candidates[best_index]
