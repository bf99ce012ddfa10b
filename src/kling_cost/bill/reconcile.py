"""Reconciliation: the ledger's charges against what Kling billed, task by task.

:func:`reconcile` joins the ledger's charges of a period with Kling's per-task bill
(``POST /account/billing/package`` and ``/account/billing/balance``) by task id, and sorts
every task into one category (:data:`CATEGORIES`):

- ``matched``: both sides charged it, within the tolerance (absolute, per task, in units);
- ``amount_differs``: both charged it, by amounts further apart than the tolerance;
- ``unknown_to_ledger``: Kling charged it and the ledger has no charge (traffic that went
  around the guard and the proxy): with Kling's ``api_key_name`` and model;
- ``not_billed``: the ledger charged it (above 0) and Kling's bill has no row (e.g. a task
  Kling refunded after the ledger committed it). Charges of 0 (failed tasks, cache hits)
  are not compared: Kling bills nothing for them either;
- ``other_unit``: the ledger charged it in ``credits`` (the app's), which cannot be compared
  with Kling's units: listed apart, never counted as a difference.

Rules kept simple and stated:

- **Cash.** A task the account's balance paid has a ``/balance`` row in currency; the ledger
  holds units for it (its list price in units, :mod:`kling_cost.guard.actuals`). Such a task
  is matched by **presence** only; amounts are compared for resource-pack rows alone.
- **The period's edges.** The ledger counts a task when it was reserved, Kling when it ended.
  Charges reserved up to :data:`EDGE` before ``since`` and bill rows deducted up to
  :data:`EDGE` after ``until`` are joined too, so a task running across an edge is matched,
  not reported on both sides. A bill row of the period whose task the ledger charged at
  another time (a late charge recorded by ``--fix``) is found by its task id.
- **Fallback.** Where the billing endpoints are not available (no API key, 404, 1103,
  1203), the ledger's task ids are asked of Kling's task queries instead
  (``final_unit_deduction`` / ``billing[]``). Then nothing is known of tasks the ledger never
  saw: the result says so (``complete`` is False) and has no ``unknown_to_ledger``.
- **Fix** (``fix=True``): each ``unknown_to_ledger`` task is recorded as a late charge on
  ``account`` (``ledger.charge``, idempotency key ``kling-bill:<task id>``, metadata
  ``source: reconcile``, ``late: true``, Kling's key name and model): actuals win, and a
  second fix records nothing again. Where Kling charged **more** than the ledger, the
  difference is recorded the same way (``kling-bill-adjust:<task id>:<difference>``); where
  it charged **less**, nothing is recorded (a ledger cannot uncharge): it stays reported.
  A cash-paid unknown task is recorded at its USD list price in units (the catalog's USD
  per unit of its pack type); one in another currency cannot be and is reported.

Every run is recorded in the ledger (``ledger.runs``, kind ``reconcile``) with its summary
and its differences; :func:`last_run` reads the latest for the dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..budgets import validate_tz
from ..errors import (
    InvalidRequest,
    KlingCostError,
    MissingCredentials,
    PermissionDenied,
    ValidationError,
)
from ..ledger.models import EXPIRED, RESERVED
from ..ledger.runs_store import BillDifference, BillRun
from ..money import MONEY, QUANTUM, parse_amount
from ..pricing import ENDPOINTS, load_catalog
from ..pricing.catalog import DEFAULT_PACK
from ..reports import parse_since, parse_until
from ..timestamps import from_ms

if TYPE_CHECKING:
    from ..kling import KlingClient
    from ..kling.new_standard import BillingRow
    from ..ledger import Charge, Ledger

__all__ = [
    "CATEGORIES",
    "DEFAULT_TOLERANCE",
    "EDGE",
    "KIND",
    "BillLine",
    "Reconciliation",
    "compare",
    "last_run",
    "reconcile",
]

KIND = "reconcile"
"""The kind of the runs this module records in ``ledger.runs``."""

CATEGORIES = ("matched", "amount_differs", "unknown_to_ledger", "not_billed", "other_unit")
DIFFERENCES = ("amount_differs", "unknown_to_ledger", "not_billed")
"""The categories that make a run fail (exit 1)."""

DEFAULT_TOLERANCE = Decimal("0.001")
EDGE = timedelta(days=1)
"""How far past the period's edges tasks are joined (a task is reserved before it is billed)."""

PRODUCT_PACKS = {"video": "video", "image": "image", "try-on": "tryon", "tryon": "tryon"}
"""Kling's ``product_type`` -> the ledger's pack type."""

UNAVAILABLE_CODES = (1103, 1203)


@dataclass(frozen=True)
class BillLine:
    """One row of Kling's per-task bill: units from a pack (``funding="unit"``) or cash from
    the balance (``"cash"``, ``amount`` in ``currency``)."""

    task_id: str
    funding: str
    amount: Decimal
    pack_type: str | None = None
    api_key_name: str | None = None
    model: str | None = None
    product_function: str | None = None
    at: datetime | None = None
    currency: str | None = None
    list_price: Decimal | None = None


@dataclass
class _Side:
    """What one side says of a task."""

    units: Decimal = Decimal(0)
    credits: Decimal = Decimal(0)
    cash: dict[str, Decimal] = field(default_factory=dict)
    lines: list[BillLine] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)


@dataclass(frozen=True)
class Reconciliation:
    """A run's outcome: every category's count, the lines that are not ``matched``, the totals
    per pack type and per day (both sides, units), the late charges ``fix`` recorded."""

    since: datetime
    until: datetime
    source: str
    """``billing`` (Kling's per-task bill) or ``tasks`` (the task queries: the fallback)."""
    complete: bool
    """False in the fallback: tasks unknown to the ledger cannot be known."""
    tolerance: Decimal
    counts: dict[str, int]
    differences: tuple[BillDifference, ...]
    by_pack: dict[str, dict[str, Decimal]]
    by_day: dict[str, dict[str, dict[str, Decimal]]]
    """Day (in the run's time zone) -> pack type -> ``ledger`` / ``kling`` units."""
    cash: dict[str, Decimal] = field(default_factory=dict)
    """Kling's cash deductions of the period, per currency."""
    fixed: tuple[str, ...] = ()
    """Task ids ``fix`` recorded a charge for."""
    problems: tuple[str, ...] = ()
    """What could not be checked or fixed, one line each."""
    note: str | None = None
    run: BillRun | None = None

    @property
    def clean(self) -> bool:
        """No difference beyond the tolerance, nothing unknown, nothing not billed (after any fix)."""
        return not any(self.counts.get(c, 0) for c in DIFFERENCES) and not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "source": self.source,
            "complete": self.complete,
            "tolerance": str(self.tolerance),
            "counts": dict(self.counts),
            "by_pack": {k: {s: str(v) for s, v in sides.items()} for k, sides in self.by_pack.items()},
            "by_day": {
                day: {p: {s: str(v) for s, v in sides.items()} for p, sides in packs.items()}
                for day, packs in self.by_day.items()
            },
            "cash": {k: str(v) for k, v in self.cash.items()},
            "fixed": list(self.fixed),
            "problems": list(self.problems),
            "note": self.note,
            "clean": self.clean,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.summary() | {
            "run_id": None if self.run is None else self.run.id,
            "differences": [d.to_dict() for d in self.differences],
        }


# -------------------------------------------------------------------------------- comparing


def _pack_of_charge(charge: Charge) -> str | None:
    price_kind = ENDPOINTS.get(charge.kind or "")
    if price_kind is None and charge.kind:  # a new-standard path: /text-to-video/kling-3.0
        price_kind = "image" if "image" in charge.kind else "video"
    return None if price_kind is None else DEFAULT_PACK.get(price_kind)


def _day(moment: datetime | None, zone: ZoneInfo) -> str | None:
    return None if moment is None else moment.astimezone(zone).date().isoformat()


def _add(table: dict[str, dict[str, Decimal]], key: str | None, side: str, amount: Decimal) -> None:
    sides = table.setdefault(key or "unknown", {"ledger": Decimal(0), "kling": Decimal(0)})
    sides[side] = MONEY.add(sides[side], amount)


Totals = dict[str, dict[str, Decimal]]
"""Pack type -> ``ledger`` / ``kling`` units."""


def compare(
    charges: Iterable[Charge],
    lines: Iterable[BillLine],
    *,
    since: datetime,
    until: datetime,
    tolerance: Decimal = DEFAULT_TOLERANCE,
    tz: str = "UTC",
    complete: bool = True,
) -> tuple[dict[str, int], list[BillDifference], Totals, dict[str, Totals]]:
    """Sort the tasks of ``[since, until)`` into :data:`CATEGORIES`: counts, the lines that
    are not matched (in task order within each category), totals per pack type and per day.

    A task is of the period when a ledger charge of it was reserved in it, or a bill row of
    it was deducted in it; ``charges`` and ``lines`` may reach past the edges (:data:`EDGE`).
    ``complete=False`` (the task-query fallback): no ``unknown_to_ledger``."""
    zone = ZoneInfo(validate_tz(tz))
    ledger: dict[str, _Side] = {}
    kling: dict[str, _Side] = {}
    in_period: set[str] = set()
    for charge in charges:
        if charge.task_id is None or charge.actual <= 0:
            continue
        side = ledger.setdefault(charge.task_id, _Side())
        side.charges.append(charge)
        if charge.unit == "units":
            side.units = MONEY.add(side.units, charge.actual)
        else:
            side.credits = MONEY.add(side.credits, charge.actual)
        if since <= charge.created_at < until:
            in_period.add(charge.task_id)
    for line in lines:
        side = kling.setdefault(line.task_id, _Side())
        side.lines.append(line)
        if line.funding == "unit":
            side.units = MONEY.add(side.units, line.amount)
        else:
            side.cash[line.currency or ""] = MONEY.add(
                side.cash.get(line.currency or "", Decimal(0)), line.amount
            )
        if line.at is None or since <= line.at < until:
            in_period.add(line.task_id)
    counts = dict.fromkeys(CATEGORIES, 0)
    out: list[BillDifference] = []
    by_pack: dict[str, dict[str, Decimal]] = {}
    by_day: dict[str, Totals] = {}
    for task_id in sorted(in_period):
        mine, theirs = ledger.get(task_id), kling.get(task_id)
        first_line = theirs.lines[0] if theirs else None
        first_charge = mine.charges[0] if mine else None
        pack = (first_line.pack_type if first_line else None) or (
            _pack_of_charge(first_charge) if first_charge else None
        )
        model = (first_line.model if first_line else None) or (first_charge.model if first_charge else None)
        ledger_day = _day(first_charge.created_at, zone) if first_charge else None
        kling_day = _day(first_line.at, zone) if first_line else None
        if mine is not None and mine.units:
            _add(by_pack, pack, "ledger", mine.units)
            _add(by_day.setdefault(ledger_day or "unknown", {}), pack, "ledger", mine.units)
        if theirs is not None and theirs.units:
            _add(by_pack, pack, "kling", theirs.units)
            _add(by_day.setdefault(kling_day or "unknown", {}), pack, "kling", theirs.units)
        details: dict[str, Any] = {}
        if theirs is not None and theirs.cash:
            details["kling_cash"] = {k: str(v) for k, v in theirs.cash.items()}
        if first_line is not None and first_line.product_function:
            details["product_function"] = first_line.product_function
        if mine is not None and mine.credits:
            category, ledger_amount, unit = "other_unit", mine.credits, "credits"
            details["ledger_credits"] = str(mine.credits)
        elif mine is None:
            if theirs is None or not complete:
                continue
            category, ledger_amount, unit = "unknown_to_ledger", None, "units"
        elif theirs is None:
            category, ledger_amount, unit = "not_billed", mine.units, "units"
        else:
            ledger_amount, unit = mine.units, "units"
            if not any(line.funding == "unit" for line in theirs.lines):
                category = "matched"  # paid in cash: matched by presence (see the module's rules)
            elif abs(mine.units - theirs.units) <= tolerance:
                category = "matched"
            else:
                category = "amount_differs"
        counts[category] += 1
        if category == "matched":
            continue
        out.append(
            BillDifference(
                category=category,
                task_id=task_id,
                unit=unit,
                pack_type=pack,
                ledger_amount=ledger_amount,
                kling_amount=None if theirs is None else theirs.units,
                day=kling_day or ledger_day,
                api_key_name=first_line.api_key_name if first_line else None,
                model=model,
                details=details,
            )
        )
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out.sort(key=lambda d: (order[d.category], d.task_id or ""))
    days = {day: dict(sorted(packs.items())) for day, packs in sorted(by_day.items())}
    return counts, out, dict(sorted(by_pack.items())), days


# -------------------------------------------------------------------------------- Kling's side


def _unavailable(exc: KlingCostError) -> bool:
    """Whether ``exc`` says the billing endpoints cannot be used here (so: fall back)."""
    if isinstance(exc, MissingCredentials):
        return True
    if isinstance(exc, (InvalidRequest, PermissionDenied)):
        return exc.code in UNAVAILABLE_CODES or exc.http_status == 404
    return False


def _billing_line(row: BillingRow, funding: str, **cash: Any) -> BillLine:
    """One row of either billing listing (``cash``: what only the balance listing has)."""
    return BillLine(
        task_id=row.task_id,
        funding=funding,
        amount=row.deduction_amount,
        pack_type=PRODUCT_PACKS.get(row.product_type or "", row.product_type),
        api_key_name=row.api_key_name,
        model=row.model_name,
        product_function=row.product_function,
        at=None if row.deduction_time is None else from_ms(row.deduction_time),
        **cash,
    )


def _billing_lines(client: KlingClient, start: datetime, end: datetime) -> list[BillLine]:
    out = [
        _billing_line(row, "unit") for page in client.billing_package_pages(start, end) for row in page.result
    ]
    out.extend(
        _billing_line(cash, "cash", currency=cash.currency, list_price=cash.list_price)
        for page in client.billing_balance_pages(start, end)
        for cash in page.result
    )
    return out


def _task_lines(client: KlingClient, charges: Sequence[Charge], problems: list[str]) -> list[BillLine]:
    """The fallback: each charged task asked of Kling's task queries."""
    from ..kling.new_standard import NewStandardTask

    out: list[BillLine] = []
    seen: set[str] = set()
    for charge in charges:
        task_id = charge.task_id
        if task_id is None or task_id in seen or charge.actual <= 0 or charge.unit != "units":
            continue
        seen.add(task_id)
        endpoint = charge.metadata.get("endpoint") or charge.kind
        if not isinstance(endpoint, str) or not endpoint:
            problems.append(f"task {task_id}: the ledger does not say which endpoint made it; not checked")
            continue
        try:
            task = client.get_task(endpoint, task_id)
        except InvalidRequest as exc:
            if exc.code == 1203 or exc.http_status == 404:
                continue  # Kling does not know it: not billed
            raise
        if not task.done:
            problems.append(f"task {task_id}: still {task.task_status} at Kling; not checked")
            continue
        pack = _pack_of_charge(charge)
        if isinstance(task, NewStandardTask):
            if task.units > 0:
                out.append(BillLine(task_id, "unit", task.units, pack, model=charge.model))
            for currency, amount in task.cash().items():
                out.append(BillLine(task_id, "cash", amount, pack, currency=currency or None))
        else:
            units = task.final_unit_deduction or Decimal(0)
            if task.succeeded and units > 0:
                out.append(BillLine(task_id, "unit", units, pack, model=charge.model))
            elif task.paid_in_cash:
                out.append(BillLine(task_id, "cash", Decimal(0), pack))
    return out


# -------------------------------------------------------------------------------- fixing


def _late_units(line: BillLine, units: Decimal) -> Decimal | None:
    """What a late charge of a bill line records in units; None when cash cannot be priced."""
    if line.funding == "unit":
        return units
    rate = load_catalog("kling-api").usd_per_unit.get(line.pack_type or "")
    if (line.currency or "").upper() != "USD" or line.list_price is None or not rate:
        return None
    return MONEY.divide(line.list_price, rate).quantize(QUANTUM, rounding=ROUND_CEILING)


def _fix(
    ledger: Ledger, differences: Sequence[BillDifference], lines: Sequence[BillLine]
) -> tuple[list[str], list[str]]:
    by_task: dict[str, BillLine] = {}
    for row in lines:
        by_task.setdefault(row.task_id, row)
    fixed: list[str] = []
    problems: list[str] = []
    for diff in differences:
        task_id = diff.task_id
        if task_id is None:
            continue
        line = by_task.get(task_id)
        base = {
            "source": "reconcile",
            "late": True,
            "api_key_name": diff.api_key_name,
            "model": diff.model,
            "pack_type": diff.pack_type,
        }
        if line is not None and line.product_function:
            base["kind"] = line.product_function
        if line is not None and line.at is not None:
            base["deduction_time"] = line.at.isoformat()
        if diff.category == "unknown_to_ledger" and line is not None:
            pending = ledger.reservation_for_task(task_id)
            if pending is not None and pending.status in (RESERVED, EXPIRED):
                # The guard (or the proxy) holds it and will settle it: a late charge would count it twice.
                problems.append(
                    f"task {task_id}: the ledger's reservation {pending.id} for it is {pending.status}, "
                    "not settled yet; settle it (kling-cost settle) rather than fix it"
                )
                continue
            amount = _late_units(line, diff.kling_amount or Decimal(0))
            if amount is None or amount <= 0:
                problems.append(
                    f"task {task_id}: paid in {line.currency or 'an unknown currency'}; "
                    "cannot record it in units"
                )
                continue
            key, meta = (
                f"kling-bill:{task_id}",
                base | {"kling_units": str(diff.kling_amount), "paid": line.funding},
            )
        elif (
            diff.category == "amount_differs"
            and diff.kling_amount is not None
            and diff.ledger_amount is not None
        ):
            if diff.kling_amount <= diff.ledger_amount:
                continue  # Kling charged less: reported, never uncharged
            amount = MONEY.subtract(diff.kling_amount, diff.ledger_amount)
            key = f"kling-bill-adjust:{task_id}:{amount}"
            meta = base | {"adjusts": str(diff.ledger_amount), "kling_units": str(diff.kling_amount)}
        else:
            continue
        try:
            ledger.charge(
                amount, scopes=["account"], idempotency_key=key, task_id=task_id, metadata=meta, unit="units"
            )
        except ValidationError as exc:  # a unit mismatch, an idempotency conflict
            problems.append(f"task {task_id}: not recorded: {exc}")
            continue
        fixed.append(task_id)
    return fixed, problems


# -------------------------------------------------------------------------------- running


def _period(
    ledger: Ledger, since: datetime | date | str | None, until: datetime | date | str | None, tz: str
) -> tuple[datetime, datetime]:
    now = ledger.clock()
    start = parse_since("7d" if since is None else since, tz, now)
    end = parse_until(until, tz) or now
    if start is None:  # pragma: no cover - "7d" always gives a start
        raise ValidationError("reconcile needs a start (since)")
    if end <= start:
        raise ValidationError(
            f"until {end.isoformat()} is not after since {start.isoformat()}: nothing to reconcile"
        )
    return start, end


def reconcile(
    ledger: Ledger,
    client: KlingClient,
    *,
    since: datetime | date | str | None = "7d",
    until: datetime | date | str | None = None,
    tolerance: Decimal | str | int = DEFAULT_TOLERANCE,
    fix: bool = False,
    tz: str = "UTC",
) -> Reconciliation:
    """Reconcile the ledger with Kling's bill over ``[since, until)`` (default: the last 7
    days up to now, by the ledger's clock) and record the run (``ledger.runs``).

    ``since``/``until`` as in reports (``7d``, ``YYYY-MM-DD``, an ISO time, a date or an
    aware datetime); days of the totals are days in ``tz``. ``tolerance``: the largest
    difference per task, in units, still matched. ``fix=True`` records late charges (see
    the module's rules) and reconciles again: the recorded run is the one after the fix,
    listing what was fixed. Kling errors other than "not available" raise."""
    tol = parse_amount(tolerance, what="tolerance", allow_zero=True)
    zone_name = validate_tz(tz)
    start, end = _period(ledger, since, until, zone_name)
    started = ledger.clock()
    result, lines = _once(ledger, client, start, end, tol, zone_name)
    fixed: list[str] = []
    problems: list[str] = []
    if fix and result.complete:
        fixed, problems = _fix(ledger, result.differences, lines)
        if fixed:
            result, _ = _once(ledger, client, start, end, tol, zone_name)
    elif fix:
        problems.append("--fix needs Kling's billing endpoints (the task queries cannot show unknown tasks)")
    result = replace(result, fixed=tuple(fixed), problems=result.problems + tuple(problems))
    run = ledger.runs.record(
        KIND,
        since=start,
        until=end,
        status="clean" if result.clean else "differences",
        summary=result.summary(),
        differences=result.differences,
        started_at=started,
        fixed=len(fixed),
    )
    return replace(result, run=run)


def _charges_with_late(ledger: Ledger, start: datetime, lines: Sequence[BillLine]) -> list[Charge]:
    """The ledger's charges from :data:`EDGE` before the period on (later ones too: a late
    charge ``fix`` recorded counts for its task), and those of the bill's tasks reserved even
    earlier (found by task id)."""
    charges = ledger.charges(since=start - EDGE)
    known = {c.task_id for c in charges}
    wanted = sorted({line.task_id for line in lines if line.task_id not in known})
    return [*charges, *_charges_of_tasks(ledger, wanted)]


def _charges_of_tasks(ledger: Ledger, task_ids: Sequence[str]) -> Iterator[Charge]:
    """Every charge of these tasks, from the first reservation of each on."""
    ids = set(task_ids)
    for task_id in task_ids:
        reservation = ledger.reservation_for_task(task_id)
        if reservation is None:
            continue
        for charge in ledger.charges(
            since=reservation.created_at, until=reservation.created_at + timedelta(milliseconds=1)
        ):
            if charge.task_id in ids:
                yield charge


def _once(
    ledger: Ledger, client: KlingClient, start: datetime, end: datetime, tol: Decimal, tz: str
) -> tuple[Reconciliation, list[BillLine]]:
    problems: list[str] = []
    note = None
    try:
        lines = _billing_lines(client, start, end + EDGE)
        source, complete = "billing", True
    except KlingCostError as exc:
        if not _unavailable(exc):
            raise
        source, complete = "tasks", False
        note = (
            f"Kling's billing endpoints are not available ({exc}); the ledger's tasks were asked "
            "one by one instead, so tasks charged by Kling but unknown to the ledger cannot be known"
        )
        charges = ledger.charges(since=start - EDGE)
        lines = _task_lines(client, [c for c in charges if start <= c.created_at < end], problems)
    else:
        charges = _charges_with_late(
            ledger, start, [line for line in lines if line.at is None or line.at < end]
        )
    counts, differences, by_pack, by_day = compare(
        charges, lines, since=start, until=end, tolerance=tol, tz=tz, complete=complete
    )
    cash: dict[str, Decimal] = {}
    for line in lines:
        if line.funding == "cash" and (line.at is None or start <= line.at < end):
            cash[line.currency or ""] = MONEY.add(cash.get(line.currency or "", Decimal(0)), line.amount)
    result = Reconciliation(
        since=start,
        until=end,
        source=source,
        complete=complete,
        tolerance=tol,
        counts=counts,
        differences=tuple(differences),
        by_pack=by_pack,
        by_day=by_day,
        cash=cash,
        problems=tuple(problems),
        note=note,
    )
    return result, lines


def last_run(ledger: Ledger) -> BillRun | None:
    """The latest reconciliation recorded in ``ledger``, with its differences (for the dashboard)."""
    return ledger.runs.last(KIND)
