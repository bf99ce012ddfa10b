"""What the simulated account holds: packs, tasks, charges, and how Kling writes each of them
on the legacy standard (``task_status``, ``final_unit_deduction``) and the new one
(``status``, ``outputs[]``, ``billing[]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..errors import ValidationError
from ..money import format_amount
from ..pricing import Estimate

__all__ = [
    "NEW_STATUS",
    "PRODUCT_TYPES",
    "CallbackEvent",
    "Charge",
    "Fault",
    "Pack",
    "SimTask",
    "pack_units",
]

NEW_STATUS = {
    "submitted": "submitted",
    "processing": "processing",
    "succeed": "succeeded",
    "failed": "failed",
}
"""Legacy status -> the new standard's spelling (``succeed`` -> ``succeeded``)."""

PRODUCT_TYPES = {"video": "video", "image": "image", "tryon": "try-on"}
"""Pack type -> ``product_type`` of Kling's billing rows."""

PRODUCT_FUNCTIONS = {
    "text2video": "text-to-video",
    "image2video": "image-to-video",
    "multi-image2video": "multi-image-to-video",
    "omni-video": "omni-video",
    "motion-control": "motion-control",
    "video-extend": "video-extend",
    "lip-sync": "lip-sync",
    "advanced-lip-sync": "advanced-lip-sync",
    "effects": "effects",
    "image": "image-generation",
    "tryon": "virtual-try-on",
}
"""Endpoint kind -> ``product_function`` of a billing row (the new standard's names)."""


def _text(amount: Decimal) -> str:
    return format_amount(amount)


MAX_PACK_UNITS = Decimal(10**12)
"""Most units a simulated pack holds; larger sizes (or NaN, infinities) are refused, since
amounts past Decimal's range would break every later request."""


def pack_units(value: object) -> Decimal:
    """``value`` as a pack size: a finite number of units from 0 to :data:`MAX_PACK_UNITS`;
    raises :class:`~kling_cost.errors.ValidationError` (a ``ValueError``) otherwise."""
    try:
        units = Decimal(str(value)) if isinstance(value, (int, str, Decimal)) else None
    except ArithmeticError:
        units = None
    if isinstance(value, bool) or units is None or not units.is_finite() or not 0 <= units <= MAX_PACK_UNITS:
        raise ValidationError(f"pack size {value!r} must be a number of units from 0 to {MAX_PACK_UNITS:,}")
    return units


@dataclass
class Pack:
    """One resource pack: ``remaining`` units (exact), valid from ``effective_time`` to ``invalid_time``.

    ``history`` notes ``(time ms, remaining)`` at each change (the first: the pack's purchase,
    full), so ``/account/costs`` can answer ``remaining_quantity`` as it was some time ago
    (Kling's figure lags its charges by up to 12 h; :meth:`remaining_at`). Change ``remaining``
    through :meth:`deduct` or :meth:`set_remaining` to keep the history. Past ``invalid_time``
    the pack is ``expired`` and what it still holds is lost: it pays for nothing any more.
    """

    name: str
    pack_id: str
    pack_type: str
    total: Decimal
    remaining: Decimal
    purchase_time: int
    effective_time: int
    invalid_time: int
    concurrency: int
    history: list[tuple[int, Decimal]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append((self.purchase_time, self.remaining))

    def status(self, now_ms: int) -> str:
        if now_ms < self.effective_time:
            return "toBeOnline"
        if now_ms >= self.invalid_time:
            return "expired"
        if self.remaining <= 0:
            return "runOut"
        return "online"

    def set_remaining(self, units: Decimal, at: int) -> None:
        """``remaining = units`` from ``at`` (ms) on, noted in the history."""
        self.remaining = units
        self.history.append((at, units))

    def deduct(self, units: Decimal, at: int) -> None:
        self.set_remaining(self.remaining - units, at)

    def remaining_at(self, at: int) -> Decimal:
        """What the pack held at ``at`` (ms): the last change at or before it (before the
        purchase: the first figure, the pack full)."""
        value = self.history[0][1]
        for when, units in self.history:
            if when > at:
                break
            value = units
        return value

    def to_json(self, now_ms: int, *, lag_ms: int = 0) -> dict[str, Any]:
        """The pack as ``/account/costs`` lists it; ``remaining_quantity`` as it was ``lag_ms`` ago."""
        remaining = self.remaining_at(now_ms - lag_ms) if lag_ms else self.remaining
        status = self.status(now_ms)
        if status in ("online", "runOut"):  # as the (lagging) figure shows it
            status = "online" if remaining > 0 else "runOut"
        return {
            "resource_pack_name": self.name,
            "resource_pack_id": self.pack_id,
            "resource_pack_type": "decreasing_total",
            "total_quantity": self.total,
            "remaining_quantity": remaining,
            "purchase_time": self.purchase_time,
            "effective_time": self.effective_time,
            "invalid_time": self.invalid_time,
            "status": status,
        }


@dataclass(frozen=True)
class Charge:
    """One deduction, as ``/account/billing/package`` (``funding == "unit"``) or
    ``/account/billing/balance`` (``"cash"``) lists it: one row per charged task."""

    seq: int
    funding: str
    task_id: str
    api_key_name: str
    product_function: str
    model_name: str | None
    resolution: str | None
    duration: str | None
    video_sound: str
    voice_control: str
    deduction_time: int
    product_type: str
    before: Decimal
    amount: Decimal
    after: Decimal
    package_id: str | None = None
    package_name: str | None = None
    list_price: Decimal | None = None
    currency: str | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "task_id": self.task_id,
            "api_key_name": self.api_key_name,
            "product_function": self.product_function,
            "model_name": self.model_name,
            "resolution": self.resolution,
            "duration": self.duration,
            "video_sound": self.video_sound,
            "voice_control": self.voice_control,
            "deduction_time": self.deduction_time,
            "product_type": self.product_type,
        }
        if self.funding == "unit":
            return row | {
                "package_id": self.package_id,
                "package_name": self.package_name,
                "unit_before_deduction": _text(self.before),
                "deduction_amount": _text(self.amount),
                "unit_after_deduction": _text(self.after),
            }
        return row | {
            "balance_before_deduction": _text(self.before),
            "deduction_amount": _text(self.amount),
            "balance_after_deduction": _text(self.after),
            "list_price": _text(self.list_price or Decimal(0)),
            "currency": self.currency,
        }


@dataclass
class SimTask:
    task_id: str
    endpoint: str
    pack_type: str
    external_task_id: str | None
    created_at: int
    processing_at: int
    finish_at: int
    cost: Decimal
    slots: int
    will_fail: bool
    callback_url: str | None
    video_seconds: int
    model: str | None
    mode: str
    n: int
    status: str = "submitted"
    status_msg: str = ""
    updated_at: int = 0
    charged: Decimal | None = None
    result: dict[str, Any] | None = None
    standard: str = "legacy"
    """``legacy`` (``/v1/...``, ``model_name``) or ``new`` (model in the path): the standard it was
    created on, and the only one it is visible on (queries, listings, callbacks)."""
    model_version: str = ""
    """What concurrency is counted by, with the pack type (legacy and new ids of a model are one)."""
    estimate: Estimate | None = None
    funding: str = "unit"
    """``unit`` (its resource pack) or ``cash`` (the account balance)."""
    pack_id: str | None = None
    """The pack that accepted it (``funding == "unit"``): it pays when the task succeeds."""
    list_price: Decimal = Decimal(0)
    """USD list price of ``cost`` (units x the catalog's USD per unit)."""
    output_seconds: str = ""
    """The output video's length as Kling writes it (``"10"``, ``"10.04"``)."""
    api_key_name: str = ""
    watermark: bool = False
    charge: Charge | None = None

    def to_json(self) -> dict[str, Any]:
        """The legacy task object (queries, listings and legacy callbacks)."""
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": self.status,
            "task_status_msg": self.status_msg,
            "task_info": {"external_task_id": self.external_task_id} if self.external_task_id else {},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.result is not None:
            data["task_result"] = self.result
        if self.charged is not None:
            units = self.charged if self.funding == "unit" else Decimal(0)
            data["final_unit_deduction"] = _text(units)
            cash = self.charge if self.funding == "cash" and self.charge is not None else None
            data["final_balance_deduction"] = {
                "quota": _text(cash.amount if cash else Decimal(0)),
                "list_price": _text(cash.list_price or Decimal(0) if cash else Decimal(0)),
            }
        return data

    def created_json(self) -> dict[str, Any]:
        """The new standard's create answer."""
        return {
            "id": self.task_id,
            "status": NEW_STATUS[self.status],
            "create_time": self.created_at,
            "update_time": self.updated_at,
            "external_id": self.external_task_id,
        }

    def new_json(self) -> dict[str, Any]:
        """The new standard's task object (``GET /tasks``, ``POST /tasks``, callbacks)."""
        return self.created_json() | {
            "message": self.status_msg,
            "outputs": self.outputs(),
            "billing": self.billing(),
        }

    def outputs(self) -> list[dict[str, Any]]:
        if self.result is None:
            return []
        videos = self.result.get("videos") or []
        return [
            {
                "type": "video",
                "id": video["id"],
                "url": video["url"],
                "watermark_url": video["url"].replace(".mp4", "-watermark.mp4") if self.watermark else "",
                "duration": video["duration"],
            }
            for video in videos
        ]

    def billing(self) -> list[dict[str, Any]]:
        """``billing[]``: one entry per kind of charge; empty until charged, and for failed tasks."""
        charge = self.charge
        if charge is None:
            return []
        if charge.funding == "unit":
            return [{"charge_type": "unit", "amount": _text(charge.amount), "package_type": self.pack_type}]
        return [
            {
                "charge_type": "cash",
                "cash_type": "balance",
                "amount": _text(charge.amount),
                "currency": charge.currency,
                "list_price": _text(charge.list_price or Decimal(0)),
            }
        ]

    def callback_payload(self) -> dict[str, Any]:
        """What a callback POSTs: the legacy task object, or the bare new-standard one."""
        return self.new_json() if self.standard == "new" else self.to_json()


@dataclass(frozen=True)
class CallbackEvent:
    url: str
    payload: dict[str, Any]


@dataclass
class Fault:
    """Answer the next ``times`` matching requests with ``code`` instead of serving them."""

    code: int
    times: int = 1
    scope: str = "create"  # create, query or any
    message: str = "injected fault"
