"""What the ledger hands back: reservations and charges."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = ["AlertRecord", "Charge", "PromptCost", "Reservation"]

RESERVED = "reserved"
COMMITTED = "committed"
RELEASED = "released"
EXPIRED = "expired"
CACHED = "cached"
"""A request served from the dedup cache: nothing held, nothing charged."""
STATUSES = (RESERVED, COMMITTED, RELEASED, EXPIRED, CACHED)


@dataclass(frozen=True)
class Reservation:
    """Credits held for one request until it is committed, released, or its lease expires."""

    id: str
    idempotency_key: str
    amount: Decimal
    status: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    actual: Decimal | None = None
    settled_at: datetime | None = None
    task_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    windows: tuple[tuple[int, str], ...] = ()
    """(budget id, window key) of every budget window this reservation counts in."""
    revived: bool = False
    """True when this call reserved again a key whose earlier reservation was released or
    expired before Kling accepted a task (check Kling for the ``external_task_id`` first)."""
    fresh: bool = False
    """True when this call created (or revived) the hold: the caller owns it. False when an
    idempotent repeat returned an existing reservation that someone else may be sending."""
    unit: str = "units"
    """What ``amount`` and ``actual`` count: ``units`` or ``credits`` (settle in this unit)."""
    catalog: str | None = None
    """The catalog that priced the request (its name), when it was priced by one."""
    catalog_date: str | None = None
    """The ISO date of the catalog entry that priced it (its ``effective_from``)."""

    @property
    def settled(self) -> bool:
        return self.status != RESERVED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "amount": str(self.amount),
            "status": self.status,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "actual": None if self.actual is None else str(self.actual),
            "settled_at": None if self.settled_at is None else self.settled_at.isoformat(),
            "task_id": self.task_id,
            "unit": self.unit,
            "catalog": self.catalog,
            "catalog_date": self.catalog_date,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class Charge:
    """One settled generation: what was estimated and what was actually charged."""

    id: int
    reservation_id: str
    idempotency_key: str
    created_at: datetime
    settled_at: datetime
    estimate: Decimal
    actual: Decimal
    scopes: tuple[str, ...]
    task_id: str | None = None
    kind: str | None = None
    model: str | None = None
    mode: str | None = None
    duration: int | None = None
    audio: bool = False
    prompt_hash: str | None = None
    prompt_preview: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "succeeded"
    """``succeeded`` (Kling charged ``actual``), ``failed`` (refunded: 0) or ``cache_hit``
    (served from the dedup cache: 0 charged, ``estimate`` saved)."""
    unit: str = "units"
    """What ``estimate`` and ``actual`` count: ``units`` or ``credits``."""
    catalog: str | None = None
    catalog_date: str | None = None
    overage: Decimal = Decimal("0.000")
    """How far this charge took a budget window past its limit: for each window it counts in,
    the rise of ``max(0, used + reserved - limit)`` that settling it caused; the largest of
    them (0 when every budget stayed within its limit). A charge whose ``actual`` is above its
    ``estimate`` within the limit has no overage (see ``actual - estimate``, the drift)."""

    @property
    def saved(self) -> Decimal:
        """Credits the dedup cache saved (the estimate of a cache hit), else 0."""
        return self.estimate if self.status == "cache_hit" else Decimal("0.000")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reservation_id": self.reservation_id,
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at.isoformat(),
            "settled_at": self.settled_at.isoformat(),
            "unit": self.unit,
            "estimate": str(self.estimate),
            "actual": str(self.actual),
            "scopes": list(self.scopes),
            "task_id": self.task_id,
            "kind": self.kind,
            "model": self.model,
            "mode": self.mode,
            "duration": self.duration,
            "audio": self.audio,
            "prompt_hash": self.prompt_hash,
            "prompt_preview": self.prompt_preview,
            "catalog": self.catalog,
            "catalog_date": self.catalog_date,
            "metadata": self.metadata,
            "overage": str(self.overage),
        }


@dataclass(frozen=True)
class PromptCost:
    """What one prompt (by its hash) cost over a period, in one ``unit``."""

    prompt_hash: str
    prompt_preview: str | None
    unit: str
    actual: Decimal
    """The sum of what its charges cost (failed tasks and cache hits count 0)."""
    charges: int
    """How many charges carried the prompt (every status)."""
    models: tuple[str, ...]
    """The models it was generated with, costliest first."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_hash": self.prompt_hash,
            "prompt_preview": self.prompt_preview,
            "unit": self.unit,
            "actual": str(self.actual),
            "charges": self.charges,
            "models": list(self.models),
        }


@dataclass(frozen=True)
class AlertRecord:
    """One alert in the outbox: a threshold crossing (or a refusal) of one budget window.

    ``kind``: ``threshold`` (``threshold`` is the fraction, e.g. ``"0.8"``), ``refused``,
    ``max_per_request``, ``overage`` (a commit took the window past its limit), ``forecast``
    (the window's projection passes its limit; threshold ``forecast``) or ``pack-expiry`` (a
    resource pack expires with units at risk: budget id 0, the pack id as ``window_key``,
    ``limit`` its remaining units, ``used`` those it will use, ``details`` the rest).
    ``status``: ``pending`` until a sink accepted it, then ``delivered``.
    ``cleared_at`` is set when the window rolled over or the limit was raised above the
    crossing; ``resolved_status`` tracks the "resolved" message (``pending``, ``delivered``, or
    ``skipped`` when no configured sink sends resolved messages). ``attempts`` counts every
    delivery attempt of the row (the alert, then its "resolved" message).
    """

    id: int
    budget_id: int
    scope: str
    window: str
    window_key: str
    kind: str
    threshold: str
    used: Decimal
    reserved: Decimal
    limit: Decimal
    message: str
    details: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None
    cleared_at: datetime | None = None
    resolved_status: str | None = None
    resolved_at: datetime | None = None
    sent_to: tuple[str, ...] = ()
    """The sinks that accepted each phase so far: ``alert:<sink>``, ``resolved:<sink>``."""

    @property
    def unit(self) -> str:
        """What ``used``, ``reserved`` and ``limit`` count: the budget's unit when the alert
        fired (``units`` for alerts written before budgets had units)."""
        unit = self.details.get("unit")
        return unit if isinstance(unit, str) and unit else "units"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "budget_id": self.budget_id,
            "scope": self.scope,
            "window": self.window,
            "window_key": self.window_key,
            "kind": self.kind,
            "threshold": self.threshold,
            "unit": self.unit,
            "used": str(self.used),
            "reserved": str(self.reserved),
            "limit": str(self.limit),
            "message": self.message,
            "details": self.details,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "delivered_at": None if self.delivered_at is None else self.delivered_at.isoformat(),
            "cleared_at": None if self.cleared_at is None else self.cleared_at.isoformat(),
            "resolved_status": self.resolved_status,
            "resolved_at": None if self.resolved_at is None else self.resolved_at.isoformat(),
            "sent_to": list(self.sent_to),
        }
