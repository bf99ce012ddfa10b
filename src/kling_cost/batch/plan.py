"""Batch planning: what a batch costs, what fits in the budgets, and cheaper alternatives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from ..budgets import Usage, normalise_scopes, unit_advice
from ..errors import PricingError
from ..ledger import Ledger
from ..money import MONEY, exact, format_amount, format_quantity
from ..pricing import Catalog, Estimate, PriceRequest, estimate, load_catalog

__all__ = ["Alternative", "BatchPlan", "plan_batch", "plural", "to_price_request"]

TURBO_MODEL = "kling-v2-5-turbo"

_WINDOW_NAMES = {"day": "today's", "week": "this week's", "month": "this month's", "lifetime": "the lifetime"}


def plural(count: int, word: str) -> str:
    """``1 request``, ``2 requests``, ``0 videos``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class Alternative:
    """The same batch with one cheaper setting, and what it saves."""

    name: str
    description: str
    total: Decimal
    saving: Decimal
    saving_usd: Decimal | None
    saving_percent: Decimal
    changed_items: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "total": format_amount(self.total),
            "saving": format_amount(self.saving),
            "saving_usd": None if self.saving_usd is None else format(self.saving_usd.normalize(MONEY), "f"),
            "saving_percent": str(self.saving_percent),
            "changed_items": self.changed_items,
        }


@dataclass(frozen=True)
class BatchPlan:
    """The whole batch priced before anything is sent."""

    items: tuple[Estimate, ...]
    total: Decimal
    unit: str
    usd: Decimal | None
    budgets: tuple[Usage, ...]
    remaining: Decimal | None
    fits: bool
    fit_count: int
    alternatives: tuple[Alternative, ...] = field(default=())
    catalog: str = ""
    """The catalog that priced the items (its name)."""
    mismatched: tuple[Usage, ...] = field(default=())
    """Budgets of the scopes that count another unit than :attr:`unit`: the batch cannot run
    against them (the ledger refuses every item) until it is priced in their unit."""

    @property
    def unit_problem(self) -> str:
        """One line naming both units and what to do, when a budget counts another unit
        (empty otherwise)."""
        if not self.mismatched:
            return ""
        u = self.mismatched[0]
        other = u.budget.unit
        hint = "--catalog kling-app-credits" if other == "credits" else "--catalog kling-api"
        return (
            f"the {u.budget.window} budget of {u.scope} counts {other} but this batch is priced in "
            f"{self.unit} (catalog {self.catalog}): price it in {other} ({hint}), or "
            f"{unit_advice(u.budget, self.unit)}"
        )

    @property
    def message(self) -> str:
        """The seed's words: "Batch needs N credits but only M remaining. Reduce to K videos
        or lower mode." (empty when the batch fits); or why no item can run (a budget of
        another unit)."""
        if self.mismatched:
            return self.unit_problem
        if self.fits or self.remaining is None:
            return ""
        return (
            f"Batch needs {format_quantity(self.total, self.unit)} but only "
            f"{format_amount(self.remaining)} remaining. "
            f"Reduce to {plural(self.fit_count, 'video')} or lower mode."
        )

    @property
    def limiting(self) -> Usage | None:
        """The budget with the least room left (the one that decides what fits), if any."""
        return min(self.budgets, key=lambda u: u.remaining, default=None)

    @property
    def fit_text(self) -> str:
        """What the batch costs and what fits: "40 requests, 2800 credits; 7 fit in today's
        budget of 500 credits (account)" (the budget with the least room, in its unit)."""
        head = f"{plural(len(self.items), 'request')}, {format_quantity(self.total, self.unit)}"
        u = self.limiting
        if u is None:
            return head
        budget = (
            f"{_WINDOW_NAMES.get(u.budget.window, u.budget.window)} budget of "
            f"{format_quantity(u.limit, u.unit)} ({u.scope})"
        )
        if u.remaining != u.limit:
            budget = f"the {format_quantity(u.remaining, u.unit)} left of {budget}"
        if self.fits:
            return f"{head}; {'it fits' if len(self.items) == 1 else 'all fit'} in {budget}"
        if self.fit_count == 0:
            return f"{head}; none fits in {budget} now"
        return f"{head}; {self.fit_count} {'fits' if self.fit_count == 1 else 'fit'} in {budget}"

    @property
    def question(self) -> str:
        """The approval question: "40 requests, 2800 credits; 7 fit in today's budget of 500
        credits (account): run them?"."""
        if self.fit_count == 0 and self.limiting is not None:
            return f"{self.fit_text}: run anyway?"
        return f"{self.fit_text}: run {'it' if len(self.items) == 1 else 'them'}?"

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": len(self.items),
            "total": format_amount(self.total),
            "unit": self.unit,
            "catalog": self.catalog,
            "usd": None if self.usd is None else format(self.usd.normalize(MONEY), "f"),
            "remaining": None if self.remaining is None else format_amount(self.remaining),
            "fits": self.fits,
            "fit_count": self.fit_count,
            "message": self.message,
            "budgets": [u.to_dict() for u in self.budgets],
            "unit_mismatch": [u.to_dict() for u in self.mismatched],
            "items": [
                {"index": i, "amount": format_amount(e.amount), "request": e.request.to_dict()}
                for i, e in enumerate(self.items)
            ],
            "alternatives": [a.to_dict() for a in self.alternatives],
        }


def to_price_request(item: PriceRequest | Mapping[str, Any]) -> PriceRequest:
    """A plan item: a :class:`PriceRequest`, a Kling create body with ``kind``/``endpoint``,
    or the estimator's fields (``kind``, ``model``, ``mode``, ``duration``, ``audio``, ``n``)."""
    if isinstance(item, PriceRequest):
        return item
    if not isinstance(item, Mapping):
        raise PricingError(f"a batch item must be a mapping of request fields, not {type(item).__name__}")
    data = dict(item)
    endpoint = str(data.pop("endpoint", None) or data.pop("kind", None) or "text2video")
    if set(data) <= _BUILD_FIELDS:
        return PriceRequest.build(endpoint, **data)
    return PriceRequest.from_kling(endpoint, data)


_BUILD_FIELDS = frozenset(
    {
        "model",
        "mode",
        "duration",
        "audio",
        "n",
        "image_input",
        "effect",
        "resolution",
        "video_input",
        "voice_control",
        "multi_image",
    }
)


def _turbo(r: PriceRequest) -> PriceRequest | None:
    if r.kind != "video" or r.model == TURBO_MODEL:
        return None
    return r.with_(model=TURBO_MODEL, audio=False)


_CHANGES: list[tuple[str, str, Callable[[PriceRequest], PriceRequest | None]]] = [
    (
        "standard",
        "standard (std, 720p) instead of professional",
        lambda r: r.with_(mode="std") if r.mode == "pro" and r.kind in ("video", "effects") else None,
    ),
    (
        "5s",
        "5 s clips instead of 10 s (extend the best ones later)",
        lambda r: r.with_(duration=5) if r.kind == "video" and (r.duration or 0) > 5 else None,
    ),
    (
        "no-audio",
        "no generated audio (add sound in post)",
        lambda r: r.with_(audio=False) if r.audio else None,
    ),
    (
        "turbo",
        f"the {TURBO_MODEL} model (no audio)",
        _turbo,
    ),
]


@exact
def plan_batch(
    requests: Sequence[PriceRequest | Mapping[str, Any]],
    ledger: Ledger | None = None,
    scopes: Sequence[str] = (),
    *,
    catalog: Catalog | str | None = None,
    as_of: date | None = None,
    labels: Sequence[str] | None = None,
) -> BatchPlan:
    """Price every item, compare the total with what remains in each budget of ``scopes``
    (plus ``account``), count how many items fit in order, and price cheaper alternatives.

    Only budgets in the catalog's unit are compared with; a budget of these scopes counting
    another unit lands in :attr:`BatchPlan.mismatched` (nothing fits: the ledger would refuse
    every item) and :attr:`BatchPlan.message` says which catalog or ``--unit`` to use.

    Raises :class:`PricingError` naming the item (``item 2``, or its label from ``labels``,
    e.g. ``prompts.txt:3`` for a batch file's line) if an item cannot be priced.
    """
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    day = as_of or (ledger.clock().date() if ledger is not None else date.today())
    items: list[Estimate] = []
    for index, raw in enumerate(requests):
        try:
            items.append(estimate(to_price_request(raw), catalog=cat, as_of=day))
        except PricingError as exc:
            where = labels[index] if labels is not None else f"item {index + 1}"
            raise PricingError(
                f"{where}: {exc}", field=exc.field, value=exc.value, allowed=exc.allowed
            ) from None
    total = sum((e.amount for e in items), Decimal("0.000"))
    usd = _usd(items)
    budgets: tuple[Usage, ...] = ()
    mismatched: tuple[Usage, ...] = ()
    if ledger is not None:
        wanted = set(normalise_scopes(list(scopes)))
        touched = [u for u in ledger.usages() if u.scope in wanted]
        budgets = tuple(u for u in touched if u.unit == cat.unit)
        mismatched = tuple(u for u in touched if u.unit != cat.unit)
    remaining = min((u.remaining for u in budgets), default=None)
    fit_count = len(items)
    if mismatched:
        fit_count = 0
    elif remaining is not None:
        running = Decimal(0)
        fit_count = 0
        for e in items:
            if running + e.amount > remaining:
                break
            running += e.amount
            fit_count += 1
    return BatchPlan(
        items=tuple(items),
        total=total,
        unit=cat.unit,
        usd=usd,
        budgets=budgets,
        remaining=remaining,
        fits=fit_count == len(items),
        fit_count=fit_count,
        alternatives=_alternatives(items, total, usd, cat, day),
        catalog=cat.name,
        mismatched=mismatched,
    )


def _usd(items: Sequence[Estimate]) -> Decimal | None:
    if not items or any(e.usd is None for e in items):
        return None
    return sum((e.usd for e in items if e.usd is not None), Decimal(0))


def _alternatives(
    items: Sequence[Estimate], total: Decimal, usd: Decimal | None, cat: Catalog, day: date
) -> tuple[Alternative, ...]:
    out: list[Alternative] = []
    changes = [*_CHANGES, ("cheapest", "all of the above together", _cheapest)]
    for name, description, change in changes:
        cheaper: list[Estimate] = []
        changed = 0
        for e in items:
            alt = _try(change, e.request, cat, day)
            if alt is not None and alt.amount < e.amount:
                cheaper.append(alt)
                changed += 1
            else:
                cheaper.append(e)
        if not changed:
            continue
        alt_total = sum((e.amount for e in cheaper), Decimal("0.000"))
        alt_usd = _usd(cheaper)
        saving = total - alt_total
        out.append(
            Alternative(
                name=name,
                description=description,
                total=alt_total,
                saving=saving,
                saving_usd=None if usd is None or alt_usd is None else usd - alt_usd,
                saving_percent=(saving * 100 / total).quantize(Decimal("0.1")) if total else Decimal(0),
                changed_items=changed,
            )
        )
    return tuple(sorted(out, key=lambda a: a.total))


def _cheapest(r: PriceRequest) -> PriceRequest | None:
    changed = r
    for _, _, change in _CHANGES[:3]:
        changed = change(changed) or changed
    return None if changed == r else changed


def _try(
    change: Callable[[PriceRequest], PriceRequest | None], req: PriceRequest, cat: Catalog, day: date
) -> Estimate | None:
    alt = change(req)
    if alt is None:
        return None
    try:
        return estimate(alt, catalog=cat, as_of=day)
    except PricingError:
        return None  # that setting is not offered for this item
