"""The simulated account's money: resource packs, an optional cash balance, and the bill.

The account holds any number of packs of each type (video, image, try-on). A task is paid
from the **online pack of its type that expires first** and holds enough units beside what
the running tasks it accepted will take. Kling does not say which pack pays when several
could; this is the conservative reading: the units that would expire soonest are used first,
so the simulator never makes a pack look safer than Kling might. A pack before its
``effective_time`` (``toBeOnline``) or past its ``invalid_time`` (``expired``: its remaining
units are lost) pays for nothing. When no pack can, the balance pays (if the account has one)
at the task's USD list price less the account's discount; otherwise it is refused (1102).

A task is charged when it succeeds, on the pack that accepted it; if that pack expired while
the task ran, on the next online pack (in expiry order) that holds enough, else still on the
pack that accepted it (Kling accepted the task). Each charged task makes one :class:`Charge`,
the row ``/account/billing/package`` or ``/account/billing/balance`` lists. Failed tasks are
not charged and have no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..money import MONEY
from ..pricing import Catalog, Estimate
from .errors import SimError
from .listing import page, parse_query
from .tasks import PRODUCT_FUNCTIONS, PRODUCT_TYPES, Charge, Pack, SimTask

__all__ = ["PACKAGE_FILTERS", "Accounts", "Balance"]

PACKAGE_FILTERS = ("api_key_name", "product_type", "package_name", "package_id")
BALANCE_FILTERS = ("api_key_name", "product_type")


@dataclass
class Balance:
    """The account's cash: ``amount`` in ``currency``; tasks pay ``list price x (1 - discount)``."""

    amount: Decimal
    currency: str = "USD"
    discount: Decimal = Decimal(0)

    def price(self, list_price: Decimal) -> Decimal:
        return MONEY.multiply(list_price, Decimal(1) - self.discount)


class Accounts:
    """Packs, balance and the charges made from them (the simulator's bill)."""

    def __init__(self, packs: list[Pack], balance: Balance | None, catalog: Catalog) -> None:
        self.packs = packs
        """Every pack of the account, of every type, in the order they were added."""
        self.balance = balance
        self.catalog = catalog
        self.charges: list[Charge] = []

    def list_price(self, units: Decimal, pack_type: str) -> Decimal:
        """USD list price of ``units`` from ``pack_type`` (0 when the catalog has no USD rate)."""
        return self.catalog.usd(units, pack_type) or Decimal(0)

    def online(self, pack_type: str, now_ms: int) -> list[Pack]:
        """The packs of ``pack_type`` that can pay now, the one that expires first first."""
        packs = [p for p in self.packs if p.pack_type == pack_type and p.status(now_ms) == "online"]
        return sorted(packs, key=lambda p: (p.invalid_time, p.effective_time, p.purchase_time, p.pack_id))

    def fund(self, est: Estimate, active: Iterable[SimTask], now_ms: int) -> tuple[str, str | None]:
        """How a task priced ``est`` is paid: (``unit``, the pack's id) or (``cash``, None);
        1102 when nothing can pay."""
        running = [t for t in active if t.pack_type == est.pack]
        for pack in self.online(est.pack, now_ms):
            held = sum(
                (t.cost for t in running if t.funding == "unit" and t.pack_id == pack.pack_id), Decimal(0)
            )
            if pack.remaining - held >= est.amount:
                return "unit", pack.pack_id
        list_price = self.list_price(est.amount, est.pack)
        if self.balance is not None and list_price > 0:
            held_cash = sum(
                (self.balance.price(t.list_price) for t in running if t.funding == "cash"), Decimal(0)
            )
            if self.balance.amount - held_cash >= self.balance.price(list_price):
                return "cash", None
        usable = [
            p for p in self.packs if p.pack_type == est.pack and p.status(now_ms) in ("online", "runOut")
        ]
        if not usable:
            raise SimError(1102, f"the {est.pack} resource pack has expired")
        raise SimError(1102, f"the {est.pack} resource pack is used up")

    def _paying(self, task: SimTask, units: Decimal, at: int) -> Pack:
        """The pack a succeeded task is charged on (see the module's docstring)."""
        accepted = next(p for p in self.packs if p.pack_id == task.pack_id)
        if accepted.status(at) != "expired":
            return accepted
        for pack in self.online(task.pack_type, at):
            if pack.remaining >= units:
                return pack
        return accepted

    def charge(self, task: SimTask, units: Decimal, at: int) -> Charge:
        """Deduct ``units`` for a task that succeeded and record the bill's row."""
        request = task.estimate.request if task.estimate is not None else None
        common: dict[str, Any] = {
            "seq": len(self.charges) + 1,
            "task_id": task.task_id,
            "api_key_name": task.api_key_name,
            "product_function": PRODUCT_FUNCTIONS.get(task.endpoint, task.endpoint),
            "model_name": task.model,
            "resolution": None if request is None else request.resolution,
            "duration": task.output_seconds if task.pack_type == "video" else None,
            "video_sound": "on" if request is not None and request.audio else "off",
            "voice_control": "on" if request is not None and request.voice_control else "off",
            "deduction_time": at,
            "product_type": PRODUCT_TYPES[task.pack_type],
        }
        if task.funding == "unit":
            pack = self._paying(task, units, at)
            before = pack.remaining
            pack.deduct(units, at)
            row = Charge(
                funding="unit",
                before=before,
                amount=units,
                after=pack.remaining,
                package_id=pack.pack_id,
                package_name=pack.name,
                **common,
            )
        else:
            balance = self.balance
            if balance is None:  # funded by cash only when there is a balance
                raise SimError(5000, "a task paid from the balance, but the account has none")
            list_price = self.list_price(units, task.pack_type)
            amount = balance.price(list_price)
            before = balance.amount
            balance.amount -= amount
            row = Charge(
                funding="cash",
                before=before,
                amount=amount,
                after=balance.amount,
                list_price=list_price,
                currency=balance.currency,
                **common,
            )
        self.charges.append(row)
        return row

    def listing(self, funding: str, body: object) -> dict[str, Any]:
        """A page of ``/account/billing/package`` (``unit``) or ``/balance`` (``cash``) rows."""
        keys = PACKAGE_FILTERS if funding == "unit" else BALANCE_FILTERS
        query = parse_query(body, keys=keys, default_limit=500, top_level_filters=True)

        def values(row: Charge) -> Mapping[str, str | None]:
            return {
                "api_key_name": row.api_key_name,
                "product_type": row.product_type,
                "package_name": row.package_name,
                "package_id": row.package_id,
            }

        return page(
            [c for c in self.charges if c.funding == funding],
            query,
            key=lambda c: (c.deduction_time, c.seq),
            values=values,
            render=Charge.to_json,
        )
