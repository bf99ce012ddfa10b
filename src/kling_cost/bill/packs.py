"""Resource packs: what each holds, what it is worth, and what will expire unused.

**The query window.** ``/account/costs`` lists the packs whose life (purchase to expiry)
meets ``[start_time, end_time]``. A window of the last 30 days misses a pack bought 43 days
ago that is still valid (one public client lost 258 units that way), so :func:`fetch_packs`
asks from ``now - 400 days`` (longer than any pack Kling sells lives) to ``now + 1 day``.

**1 query per second.** Kling asks for at most one ``/account/costs`` call per second.
:class:`CostsLimiter` takes the next free slot from the ledger (``bill_meta``,
``packs.next_call``) in one transaction, so every process sharing the ledger keeps to it
together, and waits for the rest of the second (its clock and sleep are injectable).

**The lag.** ``remaining_quantity`` can be up to 12 hours behind Kling's charges (each task's
``final_unit_deduction`` is the timely truth). Each pack's status carries the units the
ledger charged on its pack type in the last 12 hours (``charged_recently``): the figure may
not include them yet.

**Pack type.** ``/account/costs`` does not say which product a pack pays for; it is read from
the pack's name (``video``, ``image``/``kolors``, ``try-on``/``tryon``/``virtual``), unless
``pack_types`` maps the pack's id or name to it; a pack of no known type is ``unknown``
(no USD value, no projection).

**Burn rate** of a pack type: the units the ledger charged for that type (charges in unit
``units`` whose kind is billed from that pack type; refunded failures and cache hits are 0)
reserved in the last 7 days, divided by 7 (per day). A late charge ``reconcile --fix``
recorded counts at Kling's deduction time (:func:`spent_at`), not when it was recorded: a fix
of a month's bypass traffic is not a burst of the last week.

**At risk**: the burn is spent against the pack type's packs in expiry order: the pack that
expires first absorbs it until it runs out or expires, then the next (from its
``effective_time`` if later). What a pack still holds at its ``invalid_time`` is at risk.
A burn of 0 puts everything a pack holds at risk. Amounts are exact Decimals; at risk is
rounded up to the thousandth (a warning never says less than the arithmetic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StorageError, ValidationError
from ..money import QUANTUM, exact
from ..pricing import ENDPOINTS, Catalog, load_catalog, normalise_endpoint
from ..pricing.catalog import DEFAULT_PACK, PACKS
from ..timestamps import from_ms, to_ms

if TYPE_CHECKING:
    from ..kling.models import AccountCosts, ResourcePack
    from ..ledger import Charge, Ledger
    from ..ledger.bill_store import BillStore

__all__ = [
    "BURN_DAYS",
    "LAG",
    "LOOKBACK",
    "SNAPSHOT_KEY",
    "CostsLimiter",
    "PackSnapshot",
    "PackStatus",
    "burn_per_type",
    "fetch_packs",
    "load_snapshot",
    "pack_type_of",
    "project",
    "spent_at",
    "take_snapshot",
]

LOOKBACK = timedelta(days=400)
"""How far back the ``/account/costs`` window starts (longer than any pack lives)."""
LOOKAHEAD = timedelta(days=1)
LAG = timedelta(hours=12)
"""How far ``remaining_quantity`` can be behind Kling's charges."""
BURN_DAYS = 7
"""The burn rate is the units charged over this many days, per day."""
SNAPSHOT_KEY = "packs.snapshot"
LIMIT_KEY = "packs.next_call"
DAY_MS = 86_400_000
MAX_AHEAD_MS = 60_000
"""A next free slot stored further ahead than this is another clock's (or tampered): not waited for."""
LAG_NOTE = "remaining_quantity can lag Kling's charges by up to 12 h"


class CostsClient(Protocol):
    """What :func:`fetch_packs` needs of a Kling client (:class:`~kling_cost.kling.KlingClient`)."""

    def account_costs(
        self, start_time: int | datetime | None = ..., end_time: int | datetime | None = ...
    ) -> AccountCosts: ...


class CostsLimiter:
    """At most one ``/account/costs`` call per ``interval`` seconds across every process
    sharing the ledger: :meth:`wait` before each call."""

    def __init__(
        self,
        store: BillStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self.interval_ms = int(interval * 1000)

    def wait(self) -> float:
        """Take the next slot and sleep until it; returns the seconds waited (0: at once)."""
        now_ms = int(self.clock() * 1000)
        slot = self.store.take_slot(LIMIT_KEY, now_ms, self.interval_ms, max_ahead_ms=MAX_AHEAD_MS)
        delay = (slot - now_ms) / 1000
        if delay > 0:
            self.sleep(delay)
        return max(delay, 0.0)


def pack_type_of(name: str, pack_id: str = "", overrides: Mapping[str, str] | None = None) -> str:
    """The product a pack pays for: ``overrides[pack_id]`` or ``overrides[name]``, else read
    from its name; ``unknown`` when the name says nothing."""
    for key in (pack_id, name):
        if overrides and key in overrides:
            wanted = overrides[key]
            if wanted not in PACKS:
                raise ValidationError(f"pack type {wanted!r} of {key!r}: use one of {', '.join(PACKS)}")
            return wanted
    text = name.lower()
    if any(word in text for word in ("try-on", "tryon", "try on", "virtual")):
        return "tryon"
    if any(word in text for word in ("image", "kolors", "img")):
        return "image"
    if "video" in text:
        return "video"
    return "unknown"


def _pack_of_kind(kind: str | None) -> str | None:
    if not kind:
        return None
    try:
        price_kind = ENDPOINTS.get(normalise_endpoint(kind))
    except ValueError:
        return None
    return None if price_kind is None else DEFAULT_PACK.get(price_kind)


def spent_at(charge: Charge) -> datetime:
    """When a charge's units were spent: for a late charge ``reconcile --fix`` recorded
    (metadata ``late`` and ``deduction_time``), Kling's deduction time; else when it was reserved."""
    when = charge.metadata.get("deduction_time")
    if charge.metadata.get("late") is not True or not isinstance(when, str):
        return charge.created_at
    try:
        found = datetime.fromisoformat(when)
    except ValueError:
        return charge.created_at
    if found.tzinfo is None or found > charge.created_at:
        return charge.created_at
    return found


@exact
def burn_per_type(ledger: Ledger, since: datetime, until: datetime) -> dict[str, Decimal]:
    """Units the ledger charged per pack type for charges spent (:func:`spent_at`) in
    ``[since, until)``, ``until`` being now or earlier (a charge is recorded after it is spent)."""
    out = dict.fromkeys(PACKS, Decimal("0.000"))
    for charge in ledger.charges(since=since, until=until):
        pack = _pack_of_kind(charge.kind)
        if spent_at(charge) < since:
            continue
        if charge.unit == "units" and pack is not None:
            out[pack] += charge.actual
    return out


@dataclass(frozen=True)
class PackStatus:
    """One resource pack as :func:`take_snapshot` saw it (amounts in units, exact)."""

    pack_type: str
    """``video``, ``image``, ``tryon`` or ``unknown``."""
    name: str
    id: str
    total: Decimal
    remaining: Decimal
    """Kling's ``remaining_quantity`` (can lag its charges by up to 12 h)."""
    status: str
    """Kling's: ``toBeOnline``, ``online``, ``expired`` or ``runOut``."""
    purchase_time: datetime | None
    effective_time: datetime | None
    invalid_time: datetime | None
    usd_left: Decimal | None
    """USD value of ``remaining`` at the catalog's unit price of the pack type."""
    days_left: Decimal | None
    """Days until ``invalid_time`` (two decimals, rounded down; 0 once expired)."""
    burn_per_day: Decimal
    """The pack type's burn rate (units per day) the projection used."""
    units_used: Decimal
    """Units the projection spends from this pack before it expires."""
    units_at_risk: Decimal
    """Units it will still hold at ``invalid_time`` at that burn rate (0 for an expired pack)."""
    units_lost: Decimal
    """What an expired pack held when it expired (lost); 0 otherwise."""
    charged_recently: Decimal
    """Units the ledger charged on this pack type in the last 12 h, which ``remaining`` may not show yet."""

    @property
    def usable(self) -> bool:
        """``online``: its ``remaining`` can pay for tasks now."""
        return self.status == "online"

    def to_dict(self) -> dict[str, Any]:
        def when(at: datetime | None) -> str | None:
            return None if at is None else at.isoformat()

        def num(value: Decimal | None) -> str | None:
            return None if value is None else str(value)

        return {
            "pack_type": self.pack_type,
            "name": self.name,
            "id": self.id,
            "total": str(self.total),
            "remaining": str(self.remaining),
            "remaining_note": LAG_NOTE,
            "status": self.status,
            "purchase_time": when(self.purchase_time),
            "effective_time": when(self.effective_time),
            "invalid_time": when(self.invalid_time),
            "usd_left": num(self.usd_left),
            "days_left": num(self.days_left),
            "burn_per_day": str(self.burn_per_day),
            "units_used": str(self.units_used),
            "units_at_risk": str(self.units_at_risk),
            "units_lost": str(self.units_lost),
            "charged_recently": str(self.charged_recently),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackStatus:
        """Read back :meth:`to_dict`; :class:`ValidationError` (or ``KeyError``/``TypeError``) for a value
        it never writes (a naive time, a number that is not finite, a name that is not text)."""

        def when(value: Any) -> datetime | None:
            return None if value is None else _aware_time(value)

        def num(value: Any) -> Decimal | None:
            return None if value is None else _finite(value)

        return cls(
            pack_type=_text(data["pack_type"]),
            name=_text(data["name"]),
            id=_text(data["id"]),
            total=_finite(data["total"]),
            remaining=_finite(data["remaining"]),
            status=_text(data["status"]),
            purchase_time=when(data.get("purchase_time")),
            effective_time=when(data.get("effective_time")),
            invalid_time=when(data.get("invalid_time")),
            usd_left=num(data.get("usd_left")),
            days_left=num(data.get("days_left")),
            burn_per_day=_finite(data["burn_per_day"]),
            units_used=_finite(data["units_used"]),
            units_at_risk=_finite(data["units_at_risk"]),
            units_lost=_finite(data.get("units_lost", "0")),
            charged_recently=_finite(data.get("charged_recently", "0")),
        )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"not a text: {value!r}")
    return value


def _finite(value: Any) -> Decimal:
    """A stored amount (a decimal string), refused when it is not a finite number."""
    found = Decimal(_text(value))
    if not found.is_finite():
        raise ValidationError(f"not a finite amount: {value!r}")
    return found


def _aware_time(value: Any) -> datetime:
    found = datetime.fromisoformat(_text(value))
    if found.tzinfo is None:
        raise ValidationError(f"a time without its offset: {value!r}")
    return found


@dataclass(frozen=True)
class PackSnapshot:
    """Every pack at ``taken_at``, with the burn rates the projection used."""

    taken_at: datetime
    window_start: datetime
    window_end: datetime
    packs: tuple[PackStatus, ...]
    burn_per_day: dict[str, Decimal] = field(default_factory=dict)

    def of_type(self, pack_type: str) -> list[PackStatus]:
        return [p for p in self.packs if p.pack_type == pack_type]

    @exact
    def online_remaining(self, pack_type: str) -> Decimal:
        """What the online packs of ``pack_type`` hold (Kling's lagging figure)."""
        return sum((p.remaining for p in self.of_type(pack_type) if p.usable), Decimal("0.000"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "burn_days": BURN_DAYS,
            "burn_per_day": {k: str(v) for k, v in self.burn_per_day.items()},
            "note": LAG_NOTE,
            "packs": [p.to_dict() for p in self.packs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackSnapshot:
        return cls(
            taken_at=_aware_time(data["taken_at"]),
            window_start=_aware_time(data["window_start"]),
            window_end=_aware_time(data["window_end"]),
            packs=tuple(PackStatus.from_dict(p) for p in data["packs"]),
            burn_per_day={_text(k): _finite(v) for k, v in data.get("burn_per_day", {}).items()},
        )


@dataclass(frozen=True)
class _Raw:
    """A pack as Kling listed it, times in ms."""

    pack_type: str
    name: str
    id: str
    total: Decimal
    remaining: Decimal
    status: str
    purchase: int | None
    effective: int | None
    invalid: int | None


@exact
def _per_day(weekly: Decimal) -> Decimal:
    return (weekly / BURN_DAYS).quantize(QUANTUM)


@exact
def project(
    packs: Sequence[ResourcePack],
    *,
    now: datetime,
    weekly_burn: Mapping[str, Decimal],
    recent: Mapping[str, Decimal] | None = None,
    catalog: Catalog | None = None,
    pack_types: Mapping[str, str] | None = None,
) -> list[PackStatus]:
    """Each pack's status at ``now``, with the units at risk at the burn rate ``weekly_burn``
    (units per type over :data:`BURN_DAYS` days); see the module's docstring for the rule."""
    now_ms = to_ms(now)
    raws = [
        _Raw(
            pack_type=pack_type_of(p.resource_pack_name, p.resource_pack_id, pack_types),
            name=p.resource_pack_name,
            id=p.resource_pack_id,
            total=p.total_quantity,
            remaining=p.remaining_quantity,
            status=str(p.status),
            purchase=p.purchase_time,
            effective=p.effective_time,
            invalid=p.invalid_time,
        )
        for p in packs
    ]
    used: dict[str, Decimal] = {}
    window_ms = Decimal(BURN_DAYS * DAY_MS)
    for pack_type in PACKS:
        burn = weekly_burn.get(pack_type, Decimal(0))
        live = [r for r in raws if r.pack_type == pack_type and r.status in ("online", "toBeOnline")]
        live.sort(key=lambda r: (r.invalid if r.invalid is not None else 2**63, r.effective or 0, r.id))
        t = Decimal(now_ms)
        for r in live:
            if r.invalid is None:  # never expires: nothing at risk
                used[r.id] = r.remaining
                continue
            start = max(t, Decimal(r.effective or 0))
            span = max(Decimal(0), Decimal(r.invalid) - start)
            capacity = burn * span / window_ms
            if burn > 0 and capacity >= r.remaining:
                used[r.id] = r.remaining
                t = start + r.remaining * window_ms / burn  # when it runs out
            else:
                used[r.id] = capacity.quantize(QUANTUM, rounding=ROUND_FLOOR)
                t = max(t, Decimal(r.invalid))
    out = []
    for r in raws:
        spent = used.get(r.id, Decimal("0.000"))
        alive = r.status in ("online", "toBeOnline")
        usd = None
        if catalog is not None and r.pack_type in PACKS:
            usd = catalog.usd(r.remaining, r.pack_type)
        days = None
        if r.invalid is not None:
            left = max(0, r.invalid - now_ms)
            days = (Decimal(left) / DAY_MS).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
        out.append(
            PackStatus(
                pack_type=r.pack_type,
                name=r.name,
                id=r.id,
                total=r.total,
                remaining=r.remaining,
                status=r.status,
                purchase_time=None if r.purchase is None else from_ms(r.purchase),
                effective_time=None if r.effective is None else from_ms(r.effective),
                invalid_time=None if r.invalid is None else from_ms(r.invalid),
                usd_left=usd,
                days_left=days,
                burn_per_day=_per_day(weekly_burn.get(r.pack_type, Decimal(0))),
                units_used=spent if alive else Decimal("0.000"),
                units_at_risk=(r.remaining - spent).quantize(QUANTUM, rounding=ROUND_CEILING)
                if alive
                else Decimal("0.000"),
                units_lost=r.remaining if r.status == "expired" else Decimal("0.000"),
                charged_recently=(recent or {}).get(r.pack_type, Decimal("0.000")),
            )
        )
    return out


def fetch_packs(
    client: CostsClient, *, now: datetime, limiter: CostsLimiter | None = None
) -> tuple[list[ResourcePack], datetime, datetime]:
    """Every pack ``/account/costs`` lists in ``[now - LOOKBACK, now + 1 day]`` (the window
    filters on the pack's life, so every pack still valid is in it), and the window."""
    start, end = now - LOOKBACK, now + LOOKAHEAD
    if limiter is not None:
        limiter.wait()
    costs = client.account_costs(start, end)
    return list(costs.resource_pack_subscribe_infos), start, end


def take_snapshot(
    client: CostsClient,
    ledger: Ledger,
    *,
    catalog: Catalog | str = "kling-api",
    now: datetime | None = None,
    limiter: CostsLimiter | None = None,
    pack_types: Mapping[str, str] | None = None,
    save: bool = True,
) -> PackSnapshot:
    """Ask Kling for every pack (rate limited through the ledger), project the units at risk
    from the ledger's burn, and save the snapshot in the ledger (``packs.snapshot``)."""
    from ..ledger.bill_store import BillStore

    store = BillStore(ledger)
    at = now or ledger.clock()
    if at.tzinfo is None:
        raise ValidationError("now must be timezone-aware")
    at = at.astimezone(UTC)
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    packs, start, end = fetch_packs(client, now=at, limiter=limiter or CostsLimiter(store))
    weekly = burn_per_type(ledger, at - timedelta(days=BURN_DAYS), at)
    statuses = project(
        packs,
        now=at,
        weekly_burn=weekly,
        recent=burn_per_type(ledger, at - LAG, at),
        catalog=cat,
        pack_types=pack_types,
    )
    snap = PackSnapshot(
        taken_at=at,
        window_start=start,
        window_end=end,
        packs=tuple(statuses),
        burn_per_day={k: _per_day(v) for k, v in weekly.items()},
    )
    if save:
        store.set(SNAPSHOT_KEY, snap.to_dict())
    return snap


def load_snapshot(ledger: Ledger) -> PackSnapshot | None:
    """The last snapshot :func:`take_snapshot` saved in the ledger, without asking Kling."""
    from ..ledger.bill_store import BillStore

    try:
        data = BillStore(ledger).get(SNAPSHOT_KEY)
    except StorageError:  # not JSON (tampered): as if there were none; the next `packs` writes it again
        return None
    if not isinstance(data, dict):
        return None
    try:
        return PackSnapshot.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        return None
