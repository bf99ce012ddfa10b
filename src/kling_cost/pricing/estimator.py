"""The estimator: one request in, one exact estimate out (or a PricingError that says why)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from ..errors import PricingError
from ..money import MONEY, QUANTUM, format_amount
from .catalog import Catalog, PriceEntry, choose
from .loader import load_catalog
from .request import PriceRequest

__all__ = ["BreakdownLine", "Estimate", "estimate", "kling_default_model"]


@dataclass(frozen=True)
class BreakdownLine:
    """How one part of an estimate was computed: ``rate x quantity = subtotal``."""

    entry: str
    basis: str
    rate: Decimal
    quantity: int
    subtotal: Decimal
    source: str
    effective_from: date

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "basis": self.basis,
            "rate": str(self.rate),
            "quantity": self.quantity,
            "subtotal": format_amount(self.subtotal),
            "source": self.source,
            "effective_from": self.effective_from.isoformat(),
        }


@dataclass(frozen=True)
class Estimate:
    """What a request will cost, in the catalog's unit, with USD where the catalog has a rate."""

    amount: Decimal
    unit: str
    usd: Decimal | None
    catalog: str
    as_of: date
    request: PriceRequest
    breakdown: tuple[BreakdownLine, ...]
    pack: str
    priced_with: Catalog | None = field(default=None, repr=False, compare=False)
    """The catalog object that priced it (for :meth:`for_output`)."""

    def for_output(self, seconds: object) -> Estimate:
        """The same request priced on the length of the video Kling made (``"10.04"`` s:
        whole seconds, rounded half up), with the same catalog and date. Motion control is
        reserved at its longest (:attr:`PriceRequest.billed_on_output`) and committed on this."""
        return estimate(
            self.request.for_output(seconds),
            catalog=self.priced_with or self.catalog,
            as_of=self.as_of,
        )

    def charge_fields(self) -> dict[str, Any]:
        """What a charge records about the request as priced: the catalog's default model
        filled in (in a catalog without one, the model Kling runs by default), and the
        normalised mode, duration, audio and n."""
        return self.request.charge_fields(kling_default_model(self.request.kind))

    def to_dict(self) -> dict[str, Any]:
        return {
            "amount": format_amount(self.amount),
            "unit": self.unit,
            "usd": None if self.usd is None else format(self.usd.normalize(MONEY), "f"),
            "catalog": self.catalog,
            "as_of": self.as_of.isoformat(),
            "pack": self.pack,
            "request": self.request.to_dict() | {"resolution": self.request.resolution},
            "breakdown": [line.to_dict() for line in self.breakdown],
        }


KLING_DEFAULTS = "kling-api"
"""The shipped catalog whose ``[defaults]`` are Kling's own default models."""


def kling_default_model(kind: str) -> str | None:
    """The model Kling runs for a request of price kind ``kind`` that names none; ``None``
    for kinds without a model (lip-sync)."""
    return load_catalog(KLING_DEFAULTS).defaults.get(kind)


def estimate(
    request: PriceRequest | Mapping[str, Any] | None = None,
    *,
    catalog: Catalog | str | None = None,
    as_of: date | None = None,
    **fields: Any,
) -> Estimate:
    """Price one request with the catalog entries in force on ``as_of`` (default: today).

    ``request`` is a :class:`PriceRequest`, a mapping of its fields, or given as keywords:
    ``estimate(kind="text2video", model="kling-v2-6", mode="pro", duration=5, audio=True)``.
    Raises :class:`PricingError` with the offending field, its value and the allowed values.
    """
    if isinstance(request, PriceRequest):
        req = request
    else:
        merged = dict(request or {})
        merged.update(fields)
        req = PriceRequest.build(**merged)
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    day = as_of or date.today()
    req.check_model()
    if req.model is None and req.kind in cat.defaults:
        req = req.with_(model=cat.defaults[req.kind])
    entry = select_entry(cat, req, day)
    quantity = entry.quantity(duration=req.duration, n=req.n)
    amount = MONEY.multiply(entry.rate, quantity).quantize(QUANTUM, context=MONEY)
    line = BreakdownLine(
        entry=entry.describe(),
        basis=entry.basis,
        rate=entry.rate,
        quantity=quantity,
        subtotal=amount,
        source=entry.source,
        effective_from=entry.effective_from,
    )
    return Estimate(
        amount=amount,
        unit=cat.unit,
        usd=cat.usd(amount, entry.pack),
        catalog=cat.name,
        as_of=day,
        request=req,
        breakdown=(line,),
        pack=entry.pack,
        priced_with=cat,
    )


def select_entry(cat: Catalog, req: PriceRequest, day: date) -> PriceEntry:
    """The entry pricing ``req`` on ``day``; narrows field by field to explain a miss."""
    of_kind = [e for e in cat.entries if e.kind == req.kind]
    if not of_kind:
        kinds = sorted({e.kind for e in cat.entries})
        raise PricingError(
            f"catalog {cat.name} has no price for {req.endpoint}; priced kinds: {', '.join(kinds)}",
            field="kind",
            value=req.endpoint,
            allowed=kinds,
        )
    candidates = [e for e in of_kind if e.effective_from <= day]
    if not candidates:
        first = min(e.effective_from for e in of_kind)
        raise PricingError(
            f"catalog {cat.name} has no {req.endpoint} price in force on {day.isoformat()}; "
            f"its prices start on {first.isoformat()}",
            field="as_of",
            value=day.isoformat(),
            allowed=(first.isoformat(),),
        )
    known = cat.known_models(req.kind)
    if req.model is not None and known and req.model not in known:
        raise PricingError(
            f"model {req.model!r} is not a Kling model for {req.endpoint}; allowed: {', '.join(known)}",
            field="model",
            value=req.model,
            allowed=known,
        )
    context: list[str] = []

    def narrow(
        field: str,
        value: object,
        shown: str,
        matches: Callable[[PriceEntry], bool],
        offered: Callable[[PriceEntry], Iterable[object]],
    ) -> None:
        nonlocal candidates
        kept = [e for e in candidates if matches(e)]
        if not kept:
            allowed = sorted({str(v) for e in candidates for v in offered(e)}, key=_natural)
            where = f" for {' '.join(context)}" if context else f" for {req.endpoint}"
            raise PricingError(
                f"{field} {shown} is not offered{where} in catalog {cat.name}; "
                f"allowed: {', '.join(allowed) or 'none'}",
                field=field,
                value=value,
                allowed=allowed,
            )
        candidates = kept

    if req.model is not None:
        narrow(
            "model",
            req.model,
            req.model,
            lambda e: e.models is None or req.model in e.models,
            lambda e: e.models or known,
        )
        context.append(req.model)
    if req.kind in ("video", "extend", "effects", "motion", "avatar"):
        narrow(
            "mode",
            req.mode,
            f"{req.mode} ({req.resolution})",
            lambda e: e.modes is None or req.mode in e.modes,
            lambda e: e.modes or ("std", "pro"),
        )
        context.append(req.mode)
    narrow(
        "sound",
        req.audio,
        "on" if req.audio else "off",
        lambda e: e.audio == req.audio,
        lambda e: ("on" if e.audio else "off",),
    )
    if req.audio:
        context.append("with audio")
    for name, value in (
        ("video_input", req.video_input),
        ("voice_control", req.voice_control),
        ("multi_image", req.multi_image),
    ):
        matches, offered = _flag(name, value)
        narrow(name, value, "yes" if value else "no", matches, offered)
        if value:
            context.append(name.replace("_", " "))
    if req.kind == "image":
        narrow(
            "resolution",
            req.resolution,
            str(req.resolution),
            lambda e: e.resolutions is None or req.resolution in e.resolutions,
            lambda e: e.resolutions or ("any",),
        )
        narrow(
            "image",
            req.image_input,
            "image-to-image" if req.image_input else "text-to-image",
            lambda e: e.image_input is None or e.image_input == req.image_input,
            lambda e: (
                ("image-to-image", "text-to-image")
                if e.image_input is None
                else ("image-to-image" if e.image_input else "text-to-image",)
            ),
        )
    if req.kind == "effects" and req.effect is not None:
        narrow(
            "effect_scene",
            req.effect,
            req.effect,
            lambda e: e.effects is None or req.effect in e.effects,
            lambda e: e.effects or ("any",),
        )
    if req.duration is not None or any(e.durations for e in candidates):
        narrow(
            "duration",
            req.duration,
            str(req.duration),
            lambda e: e.durations is None or req.duration in e.durations,
            lambda e: e.durations or ("any",),
        )
    return choose(candidates)


def _flag(
    name: str, value: bool
) -> tuple[Callable[[PriceEntry], bool], Callable[[PriceEntry], Iterable[object]]]:
    """Match and offered-values functions of a yes/no entry field (``None`` matches both)."""

    def setting(entry: PriceEntry) -> bool | None:
        flag = getattr(entry, name)
        return None if flag is None else bool(flag)

    def matches(entry: PriceEntry) -> bool:
        return setting(entry) in (None, value)

    def offered(entry: PriceEntry) -> Iterable[object]:
        flag = setting(entry)
        return ("yes", "no") if flag is None else ("yes" if flag else "no",)

    return matches, offered


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)
