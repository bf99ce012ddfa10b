"""What the sync and async cost-aware clients share: preparing a guarded request, and
settling a task in the ledger once it has ended."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from ..budgets import normalise_scopes
from ..cache import CachePolicy, fingerprint
from ..errors import BudgetExceeded, PricingError
from ..kling._core import endpoint_kind, normalise_body, validate_create
from ..kling.models import KlingRequest, KlingTask
from ..ledger import Ledger, Reservation
from ..money import parse_amount
from ..pricing import Catalog, Estimate, PriceRequest, estimate, load_catalog

__all__ = ["GuardCore", "GuardedRequest", "SettleReport"]

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


@dataclass
class SettleReport:
    """What :meth:`CostAwareClient.settle_pending` did."""

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
    """Pricing, fingerprints, budget checks and ledger settlement for one guarded client."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        catalog: Catalog | str | None,
        scopes: Iterable[str],
        ttl: timedelta,
        cache: CachePolicy | bool,
        max_per_request: Decimal | int | str | None,
    ) -> None:
        self.ledger = ledger
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
        body: Mapping[str, Any] | KlingRequest,
        *,
        hints: Mapping[str, Any] | None = None,
    ) -> GuardedRequest:
        """Validate and price a create body; give it an ``external_task_id`` if it has none.

        ``hints`` price what the body alone cannot: ``model``/``mode`` of a video-extend's
        source video, ``duration`` (seconds) of a lip-sync's source video.
        """
        kind = endpoint_kind(endpoint)
        data = normalise_body(body.to_body() if isinstance(body, KlingRequest) else dict(body))
        price = validate_create(kind, data, None)
        est, source = self._estimate(kind, data, price, dict(hints or {}))
        key = str(data.get("external_task_id") or f"kc-{uuid.uuid4().hex}")
        data["external_task_id"] = key
        req = est.request
        prompt = data.get("prompt")
        if not isinstance(prompt, str) and isinstance(data.get("input"), Mapping):
            prompt = data["input"].get("text")
        meta: dict[str, Any] = {
            "endpoint": kind,
            "kind": kind,
            "model": req.model,
            "mode": req.mode,
            "duration": req.duration,
            "audio": req.audio,
            "n": req.n,
            "external_task_id": key,
            "estimate_source": source,
            "catalog": est.catalog,
            "unit": est.unit,
        }
        if isinstance(prompt, str):
            meta["prompt"] = prompt
        fp = fingerprint(kind, data, req)
        if self.cache.enabled:
            meta["fingerprint"] = fp
        return GuardedRequest(
            endpoint=kind,
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

    def _today(self) -> Any:
        return self.ledger.clock().date()

    def check_max(self, req: GuardedRequest) -> None:
        if self.max_per_request is not None and req.amount > self.max_per_request:
            raise BudgetExceeded(
                f"Request of {req.amount.normalize()} {req.estimate.unit} exceeds this client's "
                f"per-request maximum of {self.max_per_request.normalize()}",
                scope="client",
                window="request",
                requested=req.amount,
                available=self.max_per_request,
                reason="max_per_request",
            )

    def scopes_for(self, extra: Sequence[str] | None) -> tuple[str, ...]:
        return normalise_scopes([*self.scopes, *(extra or ())])

    # -- after the task ended -----------------------------------------------------------------

    def settle(self, reservation: Reservation, task: KlingTask) -> Reservation:
        """Commit what Kling charged for a succeeded task; release a failed one (free)."""
        if not task.done:
            return reservation
        fp = reservation.metadata.get("fingerprint")
        if task.failed:
            settled = self.ledger.release(reservation, failed=True)
            if isinstance(fp, str):
                self.ledger.cache_drop(fp, task_id=task.task_id)
            return settled
        actual, source = self.actual(task, reservation)
        extra: dict[str, Any] = {"actual_source": source}
        if task.final_unit_deduction is not None:
            extra["kling_units"] = str(task.final_unit_deduction)
        if task.videos:
            extra["videos"] = [v.id for v in task.videos if v.id]
        force = reservation.status == "expired" or reservation.expires_at <= self.ledger.clock()
        settled = self.ledger.commit(reservation, actual, task_id=task.task_id, force=force, metadata=extra)
        if isinstance(fp, str) and self.cache.enabled:
            self.ledger.cache_complete(fp, task.model_dump(mode="json"), self.cache.ttl)
        return settled

    def actual(self, task: KlingTask, reservation: Reservation) -> tuple[Decimal, str]:
        """Kling's ``final_unit_deduction`` when the catalog counts in Kling's units; else the
        estimate (flagged as such)."""
        if task.final_unit_deduction is not None and self.catalog.unit == "units":
            return task.final_unit_deduction, "kling"
        if task.final_unit_deduction is not None:
            return reservation.amount, f"estimate (catalog in {self.catalog.unit})"
        return reservation.amount, "estimate (Kling reported no final_unit_deduction)"
