"""The seed's optimisation strategies, turned into numbers for the user's own requests."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .batch.plan import plan_batch, to_price_request
from .errors import PricingError
from .money import MONEY, exact, format_amount, format_quantity
from .pricing import Catalog, PriceRequest, estimate, load_catalog

__all__ = ["Advice", "advise"]

_SEED_NAMES = {
    "standard": "Standard for drafts",
    "turbo": "v2.5 Turbo over v2.6",
    "no-audio": "Skip audio, add in post",
}


@dataclass(frozen=True)
class Advice:
    """One strategy: what to do and what it would save on these requests (catalog prices)."""

    strategy: str
    how: str
    saving: Decimal
    saving_percent: Decimal
    saving_usd: Decimal | None
    note: str = ""
    unit: str = "units"
    """What ``saving`` counts: the catalog's unit (``units`` or ``credits``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "how": self.how,
            "saving": format_amount(self.saving),
            "unit": self.unit,
            "saving_percent": str(self.saving_percent),
            "saving_usd": None if self.saving_usd is None else format(self.saving_usd.normalize(MONEY), "f"),
            "note": self.note,
        }


@exact
def advise(
    requests: Sequence[PriceRequest | Mapping[str, Any]],
    *,
    catalog: Catalog | str | None = None,
    duplicates: bool = True,
) -> list[Advice]:
    """Each strategy of the seed's table with its saving on ``requests``, biggest first.

    Strategies that cannot apply (no pro items, no audio, ...) are left out; off-peak
    batching is listed with a saving of 0 because Kling's catalog has no off-peak price.
    ``duplicates=False`` when the requests are meant as variations (no dedup advice).
    """
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    plan = plan_batch(requests, catalog=cat)
    total = plan.total
    out: list[Advice] = []
    for alt in plan.alternatives:
        if alt.name not in _SEED_NAMES:
            continue
        out.append(
            Advice(
                _SEED_NAMES[alt.name],
                alt.description,
                alt.saving,
                alt.saving_percent,
                alt.saving_usd,
                f"{alt.changed_items} of {len(plan.items)} requests change",
                cat.unit,
            )
        )
    out.extend(_extend_later(plan.items, total, cat))
    if duplicates:
        out.extend(_dedup(requests, plan.items, total, cat.unit))
    out.append(
        Advice(
            "Batch off-peak",
            "schedule large batches overnight",
            Decimal(0),
            Decimal(0),
            Decimal(0) if cat.usd_per_unit else None,  # no USD figure from a catalog without rates
            "the catalog has no off-peak price: faster processing only, no saving",
            cat.unit,
        )
    )
    return sorted(out, key=lambda a: a.saving, reverse=True)


def _pct(saving: Decimal, total: Decimal) -> Decimal:
    return (saving * 100 / total).quantize(Decimal("0.1")) if total else Decimal(0)


def _extend_later(items: Sequence[Any], total: Decimal, cat: Catalog) -> list[Advice]:
    saving = Decimal(0)
    usd: Decimal | None = Decimal(0)
    extend_cost = Decimal(0)
    changed = priced = 0
    for item in items:
        req: PriceRequest = item.request
        if req.kind != "video" or (req.duration or 0) <= 5:
            continue
        try:
            short = estimate(req.with_(duration=5), catalog=cat)
        except PricingError:
            continue
        try:
            ext = estimate(PriceRequest.build("video-extend", model=req.model, mode=req.mode), catalog=cat)
            extend_cost += ext.amount
            priced += 1
        except PricingError:
            pass
        changed += 1
        saving += item.amount - short.amount
        usd = None if usd is None or item.usd is None or short.usd is None else usd + item.usd - short.usd
    if not changed:
        return []
    return [
        Advice(
            "5s clips, extend later",
            "generate 5 s and use video-extend only on the best",
            saving,
            _pct(saving, total),
            usd,
            _extend_note(changed, priced, extend_cost, cat),
            cat.unit,
        )
    ]


def _extend_note(changed: int, priced: int, cost: Decimal, cat: Catalog) -> str:
    """What extending the shortened clips would cost, or that the catalog does not say."""
    clips = f"{changed} clip{'' if changed == 1 else 's'}"
    if not priced:
        return f"{clips}; catalog {cat.name} has no video-extend price, so extending later is not priced"
    every = "every one of them" if changed > 1 else "it"
    if priced == changed:
        return f"{clips}; extending {every} later would cost {format_quantity(cost, cat.unit)}"
    return (
        f"{clips}; extending the {priced} the catalog prices later would cost {format_amount(cost)} "
        f"{cat.unit} (catalog {cat.name} has no video-extend price for the other {changed - priced})"
    )


def _dedup(
    requests: Sequence[PriceRequest | Mapping[str, Any]], items: Sequence[Any], total: Decimal, unit: str
) -> list[Advice]:
    keys = [
        json.dumps(
            r if isinstance(r, Mapping) else to_price_request(r).to_dict(), sort_keys=True, default=str
        )
        for r in requests
    ]
    counts = Counter(keys)
    saving = Decimal(0)
    seen: set[str] = set()
    for key, item in zip(keys, items, strict=True):
        if key in seen:
            saving += item.amount
        seen.add(key)
    if not saving:
        return []
    repeats = sum(c - 1 for c in counts.values())
    return [
        Advice(
            "Cache prompts",
            "identical requests are served from the dedup cache",
            saving,
            _pct(saving, total),
            None,
            f"{repeats} repeated requests",
            unit,
        )
    ]
