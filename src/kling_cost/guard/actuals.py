"""What an ended task cost, in the unit its reservation recorded: both API standards.

The rules (README, "Guarded generation"):

- **Units** (a reservation in Kling's ``units``): what Kling billed in resource-pack units
  commits as it is: ``final_unit_deduction`` (legacy), the sum of the ``unit`` entries of
  ``billing[]`` (new standard). Actuals win, the estimate is only the hold.
- **Cash is never counted as units.** A task the account's cash balance paid has no units
  to commit. Its cash is recorded in the charge's metadata (``kling_cash``: amount, currency,
  list price, cash type; legacy ``kling_balance``: quota, list price) and the budget commits
  the task's **price in units**: its USD list price divided by the catalog's USD per unit of
  the request's pack (``list price / 0.14`` for video) when every cash entry is in USD with a
  list price, else the catalog's estimate (the legacy ``final_balance_deduction`` has no
  currency; CNY has no unit rate). ``actual_source`` says which.
- **Credits** (a reservation in the app's credits): Kling reports units, so the estimate is
  committed (Kling's figures are kept in the metadata).
- **Billed on the output** (motion control): where the estimate is committed, it is the
  catalog's price at the output video's length (:meth:`Estimate.for_output`), not the
  30 s the request was held at.
- A **failed** task Kling reports no charge for is released; one it billed anyway is
  committed like a succeeded one (actuals win).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..errors import KlingCostError
from ..kling.models import KlingTask
from ..kling.new_standard import NewStandardTask
from ..kling.tasks import AnyTask
from ..ledger import Reservation
from ..money import MONEY, QUANTUM, format_amount
from ..pricing import Catalog, PriceRequest, estimate, load_catalog
from ..pricing.catalog import DEFAULT_PACK
from ..pricing.request import ENDPOINTS

__all__ = ["actual", "billed", "output_estimate", "result_metadata"]


def billed(task: AnyTask) -> bool:
    """Whether Kling reports a charge for ``task``: units or cash above zero."""
    if isinstance(task, NewStandardTask):
        return any(entry.amount > 0 for entry in task.billing)
    units = task.final_unit_deduction or Decimal(0)
    return units > 0 or task.paid_in_cash


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else format(amount, "f")


def result_metadata(task: AnyTask, source: str) -> dict[str, Any]:
    """What a settled charge records of the ended task beside its cost: Kling's units
    (``kling_units``), any cash (``kling_cash`` / ``kling_balance``), the output videos."""
    extra: dict[str, Any] = {"actual_source": source}
    if isinstance(task, NewStandardTask):
        if task.unit_charges:
            extra["kling_units"] = _text(task.units)
        if task.cash_charges:
            extra["kling_cash"] = [
                {
                    "amount": _text(entry.amount),
                    "currency": entry.currency,
                    "list_price": _text(entry.list_price),
                    "cash_type": entry.cash_type,
                }
                for entry in task.cash_charges
            ]
    else:
        if task.final_unit_deduction is not None:
            extra["kling_units"] = str(task.final_unit_deduction)
        paid = task.final_balance_deduction
        if paid is not None and task.paid_in_cash:
            extra["kling_balance"] = {"quota": _text(paid.quota), "list_price": _text(paid.list_price)}
    if task.videos:
        extra["videos"] = [v.id for v in task.videos if v.id]
        if task.videos[0].duration:
            extra["output_duration"] = task.videos[0].duration
    return extra


def _catalog(reservation: Reservation, current: Catalog) -> Catalog | None:
    """The catalog that priced ``reservation`` (this client's when it is the same one)."""
    if reservation.catalog in (None, current.name):
        return current
    try:
        return load_catalog(reservation.catalog)
    except KlingCostError:
        return None


def output_estimate(task: AnyTask, reservation: Reservation, catalog: Catalog) -> Decimal | None:
    """For a request billed on its output (motion control): the reservation's catalog price at
    the output video's length, in the reservation's unit; ``None`` for other requests, or
    when the task names no output length or the catalog has no such price."""
    meta = reservation.metadata
    kind = meta.get("kind")
    if not isinstance(kind, str) or ENDPOINTS.get(kind) != "motion" or not task.videos:
        return None
    seconds = task.videos[0].duration
    cat = _catalog(reservation, catalog)
    if seconds is None or cat is None or cat.unit != reservation.unit:
        return None
    try:
        request = PriceRequest.build(
            kind, model=meta.get("model"), mode=meta.get("mode"), audio=bool(meta.get("audio"))
        ).for_output(seconds)
        return estimate(request, catalog=cat, as_of=reservation.created_at.date()).amount
    except KlingCostError:
        return None


def _estimated(task: AnyTask, reservation: Reservation, catalog: Catalog, why: str) -> tuple[Decimal, str]:
    on_output = output_estimate(task, reservation, catalog)
    if on_output is not None:
        return on_output, f"estimate on the output's length ({why})"
    return reservation.amount, f"estimate ({why})"


def _cash_in_units(task: NewStandardTask, reservation: Reservation, catalog: Catalog) -> Decimal | None:
    """The USD list prices of ``task``'s cash entries in units of the request's pack, or
    ``None`` when one is not in USD, has no list price, or the catalog has no unit rate."""
    kind = reservation.metadata.get("kind")
    pack = DEFAULT_PACK.get(ENDPOINTS.get(kind, "")) if isinstance(kind, str) else None
    cat = _catalog(reservation, catalog)
    rate = None if cat is None or pack is None else cat.usd_per_unit.get(pack)
    if rate is None or rate <= 0:
        return None
    total = Decimal(0)
    for entry in task.cash_charges:
        if (entry.currency or "").upper() != "USD" or entry.list_price is None:
            return None
        total += MONEY.divide(entry.list_price, rate)
    return total.quantize(QUANTUM, rounding=ROUND_CEILING, context=MONEY)


def _storable(amount: Decimal, source: str) -> tuple[Decimal, str]:
    """Kling's figure as the ledger can hold it (thousandths): a finer one (``8.0004``) is
    rounded up, never down, so spend is never under-counted, and the source says so."""
    stored = amount.quantize(QUANTUM, rounding=ROUND_CEILING, context=MONEY)
    if stored == amount:
        return amount, source
    return stored, f"{source}; Kling's {amount} rounded up to 0.001"


def actual(task: AnyTask, reservation: Reservation, catalog: Catalog) -> tuple[Decimal, str]:
    """What to commit for an ended, billed (or succeeded) ``task``, and where the figure comes
    from, in the unit ``reservation`` recorded (never this client's catalog's). Kling's figures
    finer than the ledger's 0.001 are rounded up (:func:`_storable`)."""
    if reservation.unit != "units":
        return _estimated(task, reservation, catalog, f"reserved in {reservation.unit}")
    if isinstance(task, KlingTask):
        if task.paid_in_cash:
            return _estimated(task, reservation, catalog, "Kling billed the account balance")
        if task.final_unit_deduction is None:
            return _estimated(task, reservation, catalog, "Kling reported no final_unit_deduction")
        return _storable(task.final_unit_deduction, "kling")
    if not task.billing:
        return _estimated(task, reservation, catalog, "Kling reported no billing")
    if not task.cash_charges:
        return _storable(task.units, "kling")
    cash = _cash_in_units(task, reservation, catalog)
    if cash is None:
        currencies = ", ".join(sorted({c.currency or "no currency" for c in task.cash_charges}))
        return _estimated(task, reservation, catalog, f"Kling billed cash ({currencies})")
    total = task.units + cash
    return _storable(total, f"kling (cash at its USD list price: {format_amount(cash)} units)")
