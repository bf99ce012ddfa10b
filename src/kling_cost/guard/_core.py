"""What the sync and async cost-aware clients share: preparing a guarded request, and
settling a task in the ledger once it has ended."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ..budgets import normalise_scopes
from ..cache import CachePolicy, fingerprint
from ..errors import BudgetExceeded, KlingAPIError, PricingError
from ..kling._core import endpoint_kind, normalise_body, validate_create
from ..kling.models import KlingRequest, KlingTask
from ..ledger import CacheEntry, Ledger, Reservation
from ..ledger.cache_store import ABANDONED
from ..money import format_amount, parse_amount
from ..pricing import Catalog, Estimate, PriceRequest, estimate, load_catalog
from ..text import check_storable

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
        task_ttl: timedelta = timedelta(hours=2),
    ) -> None:
        self.ledger = ledger
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
        check_storable(data)  # NUL or lone surrogates: refused before anything is held
        check_storable(dict(hints or {}), "hints")
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
            **est.charge_fields(),  # as priced: default model filled in, mode/duration normalised
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
                f"Request of {format_amount(req.amount)} {req.unit} exceeds this client's "
                f"per-request maximum of {format_amount(self.max_per_request)} {req.unit}",
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

    def give_up(self, req: GuardedRequest) -> None:
        """The caller that claimed ``req``'s fingerprint failed: forget the claim when its hold
        was freed, else mark it abandoned (Kling may have it) so waiters ask Kling at once."""
        found = self.ledger.get_reservation(req.key)
        if found is not None and found.status == "reserved":
            self.ledger.cache_abandon(req.fingerprint, found.id)
        else:
            self.ledger.cache_drop(req.fingerprint)

    def holder(self, entry: CacheEntry) -> Reservation | None:
        """The reservation paying for an in-flight fingerprint (None before it reserved)."""
        return None if entry.reservation_id is None else self.ledger.get_reservation(entry.reservation_id)

    def verdict(self, entry: CacheEntry, holder: Reservation | None) -> str:
        """What a caller waiting for an in-flight ``entry`` without a task does next:
        ``WAIT``; ``CHECK`` (ask Kling for the holder's key: the holder gave up, its hold
        lapsed, or Kling has not accepted it within ``CachePolicy.wait``); ``GONE`` (Kling
        never got it: forget the claim and send our own)."""
        overdue = self.ledger.clock() >= entry.created_at + self.cache.wait
        if holder is None:  # nothing reserved yet, so nothing sent yet
            return GONE if overdue or entry.status == ABANDONED else WAIT
        if holder.status == "released":  # freed only when Kling surely did not accept it
            return GONE
        if entry.status == ABANDONED or holder.status != "reserved" or overdue:
            return CHECK
        return WAIT

    def adopt(self, entry: CacheEntry, holder: Reservation, task: KlingTask) -> None:
        """Kling accepted the request of a holder that gave up: attach the task to the holder's
        reservation (it is settled when the task ends) and let every waiter wait for it."""
        if holder.task_id is None:
            self.ledger.attach_task(holder, task.task_id, ttl=self.task_ttl)
        self.ledger.cache_adopt(entry, task.task_id)

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
        extra = self._result_metadata(task, source)
        # Kling confirmed the charge: record it even if the lease lapsed meanwhile (actuals win)
        settled = self.ledger.commit(reservation, actual, task_id=task.task_id, force=True, metadata=extra)
        if isinstance(fp, str) and self.cache.enabled:
            self.ledger.cache_complete(fp, task.model_dump(mode="json"), self.cache.ttl)
        return settled

    def _result_metadata(self, task: KlingTask, source: str) -> dict[str, Any]:
        extra: dict[str, Any] = {"actual_source": source}
        if task.final_unit_deduction is not None:
            extra["kling_units"] = str(task.final_unit_deduction)
        if task.videos:
            extra["videos"] = [v.id for v in task.videos if v.id]
        return extra

    def settle_task(self, reservation: Reservation | None, task: KlingTask) -> None:
        """Settle an ended task's reservation, whatever state the ledger left it in."""
        if reservation is None or not task.done:
            return
        if reservation.status in ("reserved", "expired"):
            self.settle(reservation, task)
        elif (
            reservation.status == "released"
            and task.succeeded
            and reservation.task_id in (None, task.task_id)
        ):
            # the hold was freed, yet Kling accepted and charged it: record the charge anyway
            actual, source = self.actual(task, reservation)
            self.ledger.charge(
                actual,
                reservation.scopes,
                idempotency_key=f"{reservation.idempotency_key}:late",
                task_id=task.task_id,
                metadata={**reservation.metadata, **self._result_metadata(task, source), "late": True},
                unit=reservation.unit,
                catalog=reservation.catalog,
                catalog_date=reservation.catalog_date,
            )

    def renew(self, task: KlingTask | None) -> None:
        """Keep a running task's reservation held while someone waits for it."""
        if task is None:
            return
        ref = task.external_task_id
        found = self.ledger.get_reservation(ref) if ref else self.ledger.reservation_for_task(task.task_id)
        if found is not None and found.status == "reserved":
            self.ledger.extend(found, self.task_ttl)

    def unsettled(self, since: datetime) -> list[Reservation]:
        """Reservations whose outcome is not in the ledger yet: held ones, and expired ones
        (made after ``since``) whose task may still have been accepted and charged."""
        held = self.ledger.reservations(status="reserved", limit=None)
        return held + self.ledger.reservations(status="expired", limit=None, since=since)

    def settle_found(
        self, res: Reservation, task: KlingTask | None, now: datetime, report: SettleReport
    ) -> None:
        """One step of ``settle_pending`` once Kling was asked about ``res``."""
        if task is None:  # Kling has no task under this key: it was never accepted
            if res.status == "reserved" and res.created_at < now - PENDING_GRACE and sent_by_key(res):
                self.ledger.release(res)
                report.released.append(res.id)
            elif res.status == "reserved":
                report.running.append(res.id)
            return
        if res.task_id is None:
            res = self.ledger.attach_task(res, task.task_id, ttl=self.task_ttl)
        if not task.done:
            if res.status == "reserved":
                self.ledger.extend(res, self.task_ttl)
            else:
                report.abandoned.append(res.id)  # expired before it could be attached
            report.running.append(res.id)
            return
        settled = self.settle(res, task)
        (report.committed if settled.status == "committed" else report.released).append(res.id)

    @staticmethod
    def actual(task: KlingTask, reservation: Reservation) -> tuple[Decimal, str]:
        """What to commit, in the unit the reservation recorded (never this client's catalog):
        Kling's ``final_unit_deduction`` for a reservation in Kling's units; else the reserved
        estimate (flagged as such: Kling reports units, the budget counts credits)."""
        if task.final_unit_deduction is not None and reservation.unit == "units":
            return task.final_unit_deduction, "kling"
        if task.final_unit_deduction is not None:
            return reservation.amount, f"estimate (reserved in {reservation.unit})"
        return reservation.amount, "estimate (Kling reported no final_unit_deduction)"
