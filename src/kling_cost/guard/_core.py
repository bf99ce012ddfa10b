"""What the sync and async cost-aware clients share without I/O: preparing and pricing a
guarded request, the single-flight verdict, and what an ended task costs.

The steps that touch the ledger are in ``async_settle.py`` (``settle.py`` is generated from
it), the flow around Kling in ``async_client.py`` (``client.py`` is generated from it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import normalise_scopes
from ..cache import CachePolicy, fingerprint
from ..errors import BudgetExceeded, KlingAPIError, PricingError
from ..kling.endpoints import (
    endpoint_kind,
    external_task_id_of,
    validate_create,
    with_external_task_id,
)
from ..kling.models import KlingRequest
from ..kling.new_standard import NewStandardRequest
from ..kling.tasks import AnyTask, create_body, parse_task
from ..ledger import CacheEntry, Ledger, Reservation
from ..ledger.cache_store import ABANDONED
from ..money import format_quantity, parse_amount
from ..pricing import Catalog, Estimate, PriceRequest, estimate, load_catalog
from ..text import check_storable
from . import actuals

__all__ = [
    "CHECK",
    "GONE",
    "PENDING_GRACE",
    "WAIT",
    "GuardCore",
    "GuardedRequest",
    "SettleReport",
    "catalog_date_of",
    "is_unknown_task",
    "sent_by_key",
    "task_document",
]

WAIT, CHECK, GONE = "wait", "check", "gone"
"""What a caller waiting for an identical request in flight does next (see ``GuardCore.verdict``)."""

PENDING_GRACE = timedelta(minutes=2)
"""A reservation without a task this old whose request Kling does not know was never sent."""


def sent_by_key(res: Reservation) -> bool:
    """Whether ``res`` paid for a Kling request sent under its idempotency key (the guard
    records the endpoint and the ``external_task_id``). Only then does Kling's "no task under
    this key" prove that nothing was accepted: a hold made another way (the seed's
    ``BudgetGuard.check``, a plain ``ledger.reserve``) is not Kling's to judge; its lease or
    its owner ends it."""
    meta = res.metadata
    return isinstance(meta.get("endpoint"), str) or meta.get("external_task_id") == res.idempotency_key


def task_document(endpoint: str, doc: Mapping[str, Any]) -> AnyTask:
    """A task stored as JSON (the dedup cache's result) as the model of its standard."""
    return parse_task(endpoint, doc)


def is_unknown_task(exc: KlingAPIError) -> bool:
    """Kling's answer "no such task" (1203, or HTTP 404)."""
    return exc.code == 1203 or (exc.code is None and exc.http_status == 404)


LIPSYNC_DEFAULT_SECONDS = 10
"""Assumed length of a lip-sync source video whose duration is unknown (priced per 5 s)."""


@dataclass(frozen=True)
class GuardedRequest:
    """A create request, validated and priced, ready to be reserved and sent."""

    endpoint: str
    body: dict[str, Any]
    key: str
    amount: Decimal
    estimate: Estimate
    estimate_source: str
    fingerprint: str
    metadata: dict[str, Any]

    @property
    def unit(self) -> str:
        """The unit of ``amount`` (the pricing catalog's): recorded on the reservation."""
        return self.estimate.unit

    @property
    def catalog(self) -> str:
        """The catalog that priced the request: recorded on the reservation."""
        return self.estimate.catalog

    @property
    def catalog_date(self) -> str:
        """The date of the catalog entries that priced it (their newest ``effective_from``)."""
        return catalog_date_of(self.estimate)


def catalog_date_of(est: Estimate) -> str:
    """The ISO date of the catalog entries that priced ``est`` (the newest ``effective_from``)."""
    return max(line.effective_from for line in est.breakdown).isoformat()


@dataclass
class SettleReport:
    """What ``settle_pending`` did (either guard)."""

    committed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "committed": self.committed,
            "released": self.released,
            "running": self.running,
            "abandoned": self.abandoned,
            "errors": self.errors,
        }


class GuardCore:
    """Pricing, fingerprints, budget checks and settlement decisions for one guarded client
    (the ledger's clock only: no ledger call)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        catalog: Catalog | str | None,
        scopes: Iterable[str],
        ttl: timedelta,
        cache: CachePolicy | bool,
        max_per_request: Decimal | int | str | None,
        task_ttl: timedelta = timedelta(hours=2),
    ) -> None:
        self.clock: Callable[[], datetime] = ledger.clock
        self.task_ttl = task_ttl
        self.catalog = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        self.scopes = normalise_scopes(list(scopes))
        self.ttl = ttl
        if isinstance(cache, bool):
            cache = CachePolicy(enabled=cache)
        self.cache = cache
        self.max_per_request = (
            None if max_per_request is None else parse_amount(max_per_request, what="max_per_request")
        )

    # -- before sending -----------------------------------------------------------------------

    def prepare(
        self,
        endpoint: str,
        body: Mapping[str, Any] | KlingRequest | NewStandardRequest,
        *,
        hints: Mapping[str, Any] | None = None,
    ) -> GuardedRequest:
        """Validate and price a create body; give it an ``external_task_id`` if it has none.

        A new-standard path (``/text-to-video/kling-3.0``) keeps its body as Kling's new
        standard spells it; its ``external_task_id`` is ``options.external_task_id``.
        ``hints`` price what the body alone cannot: ``model``/``mode`` of a video-extend's
        source video, ``duration`` (seconds) of a lip-sync's source video.
        """
        path, data = create_body(endpoint, body)
        kind = endpoint_kind(endpoint)
        target = path or kind  # where it is sent, and queried again
        check_storable(data)  # NUL or lone surrogates: refused before anything is held
        check_storable(dict(hints or {}), "hints")
        price = validate_create(target, data, None)
        est, source = self._estimate(kind, data, price, dict(hints or {}))
        key = external_task_id_of(target, data) or f"kc-{uuid.uuid4().hex}"
        with_external_task_id(target, data, key)
        req = est.request
        meta: dict[str, Any] = {
            "endpoint": target,
            "kind": kind,
            **est.charge_fields(),  # as priced: default model filled in, mode/duration normalised
            "external_task_id": key,
            "estimate_source": source,
            "catalog": est.catalog,
            "unit": est.unit,
        }
        prompt = _prompt_of(data)
        if prompt is not None:
            meta["prompt"] = prompt
        fp = fingerprint(target, data, req)
        if self.cache.enabled:
            meta["fingerprint"] = fp
        return GuardedRequest(
            endpoint=target,
            body=data,
            key=key,
            amount=est.amount,
            estimate=est,
            estimate_source=source,
            fingerprint=fp,
            metadata=meta,
        )

    def _estimate(
        self, kind: str, data: dict[str, Any], price: PriceRequest | None, hints: dict[str, Any]
    ) -> tuple[Estimate, str]:
        if price is not None:
            return estimate(price, catalog=self.catalog), "catalog"
        if kind == "video-extend":
            if hints.get("model"):
                req = PriceRequest.build(kind, model=hints["model"], mode=hints.get("mode", "std"))
                return estimate(req, catalog=self.catalog), "hint"
            return self._most_expensive(kind), "conservative"
        # lip-sync: priced per started 5 s of the source video
        raw = data.get("input") if isinstance(data.get("input"), Mapping) else {}
        seconds = hints.get("duration") or (raw or {}).get("duration")
        source = "hint" if seconds else "assumed"
        req = PriceRequest.build(kind, duration=seconds or LIPSYNC_DEFAULT_SECONDS)
        return estimate(req, catalog=self.catalog), source

    def _most_expensive(self, kind: str) -> Estimate:
        """The highest price in force for ``kind``: a reservation that cannot be too small."""
        best: Estimate | None = None
        for entry in self.catalog.current(self._today()):
            if entry.kind != "extend":
                continue
            for model in entry.models or self.catalog.known_models("extend"):
                for mode in entry.modes or ("std", "pro"):
                    try:
                        est = estimate(PriceRequest.build(kind, model=model, mode=mode), catalog=self.catalog)
                    except PricingError:
                        continue
                    if best is None or est.amount > best.amount:
                        best = est
        if best is None:
            raise PricingError(
                f"catalog {self.catalog.name} has no price for {kind}", field="kind", value=kind
            )
        return best

    def _today(self) -> date:
        return self.clock().date()

    def check_max(self, req: GuardedRequest) -> None:
        if self.max_per_request is not None and req.amount > self.max_per_request:
            raise BudgetExceeded(
                f"Request of {format_quantity(req.amount, req.unit)} exceeds this client's "
                f"per-request maximum of {format_quantity(self.max_per_request, req.unit)}",
                scope="client",
                window="request",
                requested=req.amount,
                available=self.max_per_request,
                reason="max_per_request",
                unit=req.unit,
            )

    def scopes_for(self, extra: Sequence[str] | None) -> tuple[str, ...]:
        return normalise_scopes([*self.scopes, *(extra or ())])

    # -- single-flight: waiting for an identical request in flight ----------------------------

    def verdict(self, entry: CacheEntry, holder: Reservation | None) -> str:
        """What a caller waiting for an in-flight ``entry`` without a task does next:
        ``WAIT``; ``CHECK`` (ask Kling for the holder's key: the holder gave up, its hold
        lapsed, or Kling has not accepted it within ``CachePolicy.wait``); ``GONE`` (Kling
        never got it: forget the claim and send our own)."""
        overdue = self.clock() >= entry.created_at + self.cache.wait
        if holder is None:  # nothing reserved yet, so nothing sent yet
            return GONE if overdue or entry.status == ABANDONED else WAIT
        if holder.status == "released":  # freed only when Kling surely did not accept it
            return GONE
        if entry.status == ABANDONED or holder.status != "reserved" or overdue:
            return CHECK
        return WAIT

    # -- after the task ended -----------------------------------------------------------------

    @staticmethod
    def result_metadata(task: AnyTask, source: str) -> dict[str, Any]:
        """What a settled charge records of the ended task beside its cost."""
        return actuals.result_metadata(task, source)

    def actual(self, task: AnyTask, reservation: Reservation) -> tuple[Decimal, str]:
        """What to commit, in the unit the reservation recorded (see :mod:`.actuals`)."""
        return actuals.actual(task, reservation, self.catalog)

    @staticmethod
    def charged(task: AnyTask) -> bool:
        """Whether Kling reports a charge for ``task`` (a failed task normally has none)."""
        return actuals.billed(task)


def _prompt_of(data: Mapping[str, Any]) -> str | None:
    """The prompt of a create body of either standard (legacy ``prompt`` or ``input.text``;
    new ``prompt`` or the ``contents`` prompt item)."""
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(data.get("input"), Mapping) and isinstance(data["input"].get("text"), str):
        return str(data["input"]["text"])
    contents = data.get("contents")
    if isinstance(contents, list):
        for item in contents:
            if (
                isinstance(item, Mapping)
                and item.get("type") == "prompt"
                and isinstance(item.get("text"), str)
            ):
                return str(item["text"])
    return None
