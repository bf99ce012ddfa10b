"""Usage reports: charges grouped by time, model, mode, duration, audio, endpoint, scope, status.

Reports read the rollup (:mod:`kling_cost.ledger.rollup`) whenever it can answer exactly:
groupings by day/week/month, model, mode, status and scope, in a zone whose offsets over
the period are whole hours, over a period starting and ending on UTC hours (every date-based
period in such a zone does). Anything else (``duration``, ``audio``, ``kind``; a zone such as
Asia/Kolkata; a scope filter combined with a scope grouping) reads the raw charges. Both give
the same numbers; ``Report.source`` says which was used.

Every group is also split by **unit** (``units`` or ``credits``: what each charge's
reservation counted), and every row and total carries its unit: amounts in different units are
never added together. A report over a ledger holding both has one total per unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ..budgets import UNITS, validate_scope
from ..errors import StorageError, ValidationError
from ..ledger import Charge, Ledger
from ..ledger.rollup import BUCKET_MS, DAY_MS, STATUSES
from ..money import from_storage, money_context, to_storage
from ..timestamps import to_ms
from . import _time

__all__ = ["DIMENSIONS", "Report", "ReportRow", "parse_by", "report", "sort_units"]

TIME_DIMS = ("day", "week", "month")
SCOPE_KINDS = ("project", "key", "user")
DIMENSIONS = (*TIME_DIMS, "model", "mode", "duration", "audio", "kind", "status", "scope", *SCOPE_KINDS)
"""What ``by`` accepts: ``project``/``key``/``user`` group by the scopes of that kind a charge
carries (a charge with none is left out of such groups); ``scope`` by every scope."""
_ALIASES = {"endpoint": "kind", "date": "day"}
_ROLLUP_DIMS = {*TIME_DIMS, "model", "mode", "status", "scope", *SCOPE_KINDS}
Key = str | int | bool | None


def parse_by(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"day,model"`` or ``["day", "model"]`` -> validated dimensions (aliases: endpoint, date)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        name = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not name:
            continue
        if name not in DIMENSIONS:
            raise ValidationError(f"cannot group by {raw!r}; choose from: {', '.join(DIMENSIONS)}")
        if name not in out:
            out.append(name)
    if len([d for d in out if d in TIME_DIMS]) > 1:
        raise ValidationError("group by at most one of day, week, month")
    if len([d for d in out if d in ("scope", *SCOPE_KINDS)]) > 1:
        raise ValidationError("group by at most one of scope, project, key, user")
    return tuple(out)


@dataclass
class _Sums:
    """Counts and thousandths per status: (n, estimate, actual) x (succeeded, failed, cache_hit)."""

    v: list[int] = field(default_factory=lambda: [0] * 9)

    def add(self, values: Sequence[Any]) -> None:
        for i, x in enumerate(values):
            self.v[i] += int(x)

    def add_one(self, status: str, est: int, act: int) -> None:
        if status not in STATUSES:
            raise StorageError(
                f"a charge's status {status!r} is unknown to this version of kling-cost (written by "
                "hand or by a newer version): correct the row, or upgrade kling-cost"
            )
        base = STATUSES.index(status) * 3
        self.v[base] += 1
        self.v[base + 1] += est
        self.v[base + 2] += act


@dataclass(frozen=True)
class ReportRow:
    """One group of charges of one ``unit``: counts per status and exact amounts in that unit.

    ``estimate`` sums the estimates of succeeded charges, ``actual`` what Kling charged,
    ``drift`` is actual - estimate of the succeeded ones, ``refunded`` the estimates of failed
    tasks (charged nothing), ``saved`` the estimates of cache hits (never sent).
    """

    key: dict[str, Key]
    unit: str
    """What every amount of the row counts: ``units`` or ``credits``."""
    charges: int
    succeeded: int
    failed: int
    cache_hits: int
    estimate: Decimal
    actual: Decimal
    drift: Decimal
    refunded: Decimal
    saved: Decimal

    @classmethod
    def of(cls, key: dict[str, Key], s: Sequence[int], unit: str) -> ReportRow:
        return cls(
            key=key,
            unit=unit,
            charges=s[0] + s[3] + s[6],
            succeeded=s[0],
            failed=s[3],
            cache_hits=s[6],
            estimate=from_storage(s[1]),
            actual=from_storage(s[2] + s[5] + s[8]),
            drift=from_storage(s[2] - s[1]),
            refunded=from_storage(s[4]),
            saved=from_storage(s[7]),
        )

    @property
    def drift_pct(self) -> Decimal | None:
        """Drift as a percentage of the estimate (two decimals), None without an estimate."""
        if not self.estimate:
            return None
        with money_context():
            return (self.drift * 100 / self.estimate).quantize(Decimal("0.01"))

    def to_dict(self) -> dict[str, Any]:
        pct = self.drift_pct
        return {
            **self.key,
            "unit": self.unit,
            "charges": self.charges,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cache_hits": self.cache_hits,
            "estimate": str(self.estimate),
            "actual": str(self.actual),
            "drift": str(self.drift),
            "drift_pct": None if pct is None else str(pct),
            "refunded": str(self.refunded),
            "saved": str(self.saved),
        }


METRICS = (
    "charges",
    "succeeded",
    "failed",
    "cache_hits",
    "estimate",
    "actual",
    "drift",
    "drift_pct",
    "refunded",
    "saved",
)


@dataclass(frozen=True)
class Report:
    """Grouped usage over ``[since, until)`` in ``tz``.

    ``rows``: one per group and unit. ``totals``: one per unit present (in :data:`UNITS`
    order), each counting every charge of its unit once; never a sum across units.
    """

    by: tuple[str, ...]
    tz: str
    since: datetime | None
    until: datetime | None
    scope: str | None
    rows: tuple[ReportRow, ...]
    totals: tuple[ReportRow, ...]
    source: str
    """``rollup`` or ``charges``: where the numbers were read."""
    overages: tuple[Charge, ...] = ()
    """The charges of the period that took a budget past its limit (``Charge.overage``), oldest first."""

    @property
    def overage(self) -> dict[str, Decimal]:
        """How far the period's charges took budgets past their limits, summed per unit
        (never across units); empty when no charge went over."""
        sums: dict[str, int] = {}
        for c in self.overages:
            sums[c.unit] = sums.get(c.unit, 0) + to_storage(c.overage)
        return {u: from_storage(v) for u, v in sums.items()}

    @property
    def units(self) -> tuple[str, ...]:
        """The units of the charges in this report (none for an empty one)."""
        return tuple(t.unit for t in self.totals)

    def total_for(self, unit: str) -> ReportRow:
        """The total of ``unit`` (a row of zeros when no charge of the report counts it)."""
        for t in self.totals:
            if t.unit == unit:
                return t
        if unit not in UNITS:
            raise ValidationError(f"unit {unit!r} is unknown; allowed: {', '.join(UNITS)}")
        return ReportRow.of({}, [0] * 9, unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": list(self.by),
            "tz": self.tz,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "scope": self.scope,
            "source": self.source,
            "units": list(self.units),
            "rows": [r.to_dict() for r in self.rows],
            "totals": [t.to_dict() for t in self.totals],
            "overage": {u: str(v) for u, v in self.overage.items()},
            "overages": [
                {
                    "id": c.id,
                    "created_at": c.created_at.isoformat(),
                    "task_id": c.task_id,
                    "scopes": list(c.scopes),
                    "model": c.model,
                    "unit": c.unit,
                    "estimate": str(c.estimate),
                    "actual": str(c.actual),
                    "overage": str(c.overage),
                }
                for c in self.overages
            ],
        }


def report(
    ledger: Ledger,
    by: str | Iterable[str] = ("day",),
    *,
    since: datetime | date | str | None = None,
    until: datetime | date | str | None = None,
    scope: str | None = None,
    tz: str = "UTC",
    now: datetime | None = None,
    source: str = "auto",
) -> Report:
    """Usage grouped ``by`` (see :data:`DIMENSIONS`) over charges reserved in ``[since, until)``.

    ``since``: ``"30d"`` (the last 30 days of ``tz``, today included), a date (its local
    midnight) or an aware datetime. ``until``: a date (included) or an aware datetime
    (excluded). ``scope`` keeps the charges of one scope. ``source``: ``auto``, ``rollup``
    (fail when the rollup cannot answer exactly) or ``charges`` (always read the raw rows).
    """
    dims = parse_by(by)
    zone = _time.zone(tz)
    moment = now or ledger.clock()
    start, end = _time.parse_period(since, until, tz, moment)
    if scope is not None:
        scope = validate_scope(scope)
    if source not in ("auto", "rollup", "charges"):
        raise ValidationError(f"source {source!r} is unknown; use auto, rollup or charges")
    lo = None if start is None else to_ms(start)
    hi = None if end is None else to_ms(end)
    plan = None if source == "charges" else _rollup_plan(ledger, dims, lo, hi, scope, tz)
    if plan is None and source == "rollup":
        raise ValidationError(f"the rollup cannot answer this report exactly (by {dims}, tz {tz})")
    if plan is not None:  # once per report: its reads of the rollup below write nothing
        if source == "rollup":
            ledger.rollup.catch_up()
        elif not ledger.rollup.caught_up():
            plan = None  # it cannot fold the charges noted since (read-only): the charges answer
    if plan is not None:
        rows, totals = _from_rollup(ledger, dims, plan, lo, hi, scope)
    else:
        rows, totals = _from_charges(ledger, dims, zone, lo, hi, scope)
    overages = tuple(ledger.charges(scope, since=start, until=end, over_limit=True))  # rare: indexed
    source_used = "rollup" if plan is not None else "charges"
    return Report(dims, tz, start, end, scope, rows, totals, source_used, overages)


MAX_ROLLUP_SPANS = 60
"""A report period with more constant-offset spans than this reads the raw charges."""


def _rollup_plan(
    ledger: Ledger, dims: tuple[str, ...], lo: int | None, hi: int | None, scope: str | None, tz: str
) -> list[_time.Segment] | None:
    """The spans to read from the rollup ([] when there is no time dimension), or None."""
    if not set(dims) <= _ROLLUP_DIMS:
        return None
    if scope is not None and any(d in ("scope", *SCOPE_KINDS) for d in dims):
        return None
    if any(b is not None and b % BUCKET_MS for b in (lo, hi)):
        return None
    if not any(d in TIME_DIMS for d in dims):
        return []
    span = ledger.queries.charge_span()
    if span is None:
        return []
    # Only where charges lie, widened to UTC midnights (day rows cover it): a period since
    # 1970 in a zone with summer time would otherwise be a hundred constant-offset spans.
    lower, upper = span[0] - span[0] % DAY_MS, span[1] - span[1] % DAY_MS + DAY_MS
    first = lower if lo is None else max(lo, lower)
    last = upper if hi is None else min(hi, upper)
    if first >= last:
        return []
    spans = _time.segments(tz, first, last)
    if len(spans) > MAX_ROLLUP_SPANS:
        return None  # one statement would be too long (SQLite allows 500 UNION terms)
    return spans if _time.hour_aligned(spans) else None


def _group_spec(dims: tuple[str, ...]) -> tuple[str | None, list[str]]:
    scope_dim = next((d for d in dims if d in ("scope", *SCOPE_KINDS)), None)
    return scope_dim, [d for d in dims if d in ("model", "mode")]


Groups = dict[tuple[tuple[Key, ...], str], list[int]]
"""Sums per (dimension values, unit)."""


def _from_rollup(
    ledger: Ledger,
    dims: tuple[str, ...],
    spans: list[_time.Segment],
    lo: int | None,
    hi: int | None,
    scope: str | None,
) -> tuple[tuple[ReportRow, ...], tuple[ReportRow, ...]]:
    with ledger.rollup.reading():  # the rows and the totals read one snapshot
        time_dim = next((d for d in dims if d in TIME_DIMS), None)
        scope_dim, cols = _group_spec(dims)
        group = None if scope_dim is None else ("*" if scope_dim == "scope" else scope_dim)
        raw = ledger.rollup.sums(
            spans if time_dim else None,
            since=lo,
            until=hi,
            scope=scope,
            scope_group=group,
            dims=cols,
            catch_up=False,  # report() did
        )
        groups: Groups = {}
        first_sum = 3 + len(cols)
        day_keys: dict[int, Key] = {}  # a few hundred days over thousands of rows
        for row in raw:
            values: dict[str, Key] = {}
            if time_dim:
                number = int(row[0])
                day = day_keys.get(number)
                if day is None:
                    day = day_keys[number] = _time.day_key(_time.day_from_number(number), time_dim)
                values[time_dim] = day
            if scope_dim:
                values[scope_dim] = row[1]
            unit = str(row[2])
            for i, col in enumerate(cols):
                values[col] = row[3 + i] or None
            sums = [int(x) for x in row[first_sum:]]
            parts: list[tuple[str | None, list[int]]] = [(None, sums)]
            if "status" in dims:  # unfold: one group per status present
                parts = [
                    (s, [x if i * 3 <= j < i * 3 + 3 else 0 for j, x in enumerate(sums)])
                    for i, s in enumerate(STATUSES)
                    if sums[i * 3]
                ]
            for status, part in parts:
                if status is not None:
                    values["status"] = status
                key = (tuple(values.get(d) for d in dims), unit)
                acc = groups.get(key)
                if acc is None:
                    groups[key] = part
                else:
                    acc[:] = [a + b for a, b in zip(acc, part, strict=True)]
        totals: dict[str, list[int]] = {}
        if scope_dim is None:  # the groups partition the charges: their sums per unit are the totals
            for (_, unit), sums in groups.items():
                _add(totals, unit, sums)
        else:  # a charge may count in several scopes: read the totals on their own
            for row in ledger.rollup.sums(
                None, since=lo, until=hi, scope=scope, scope_group=None, dims=[], catch_up=False
            ):
                _add(totals, str(row[2]), [int(x) for x in row[3:]])
        return _rows(dims, groups), _totals(totals)


def _from_charges(
    ledger: Ledger, dims: tuple[str, ...], zone: Any, lo: int | None, hi: int | None, scope: str | None
) -> tuple[tuple[ReportRow, ...], tuple[ReportRow, ...]]:
    import json

    groups: dict[tuple[tuple[Key, ...], str], _Sums] = {}
    totals: dict[str, _Sums] = {}
    time_dim = next((d for d in dims if d in TIME_DIMS), None)
    scope_dim, _ = _group_spec(dims)
    for (
        created,
        status,
        est_raw,
        act_raw,
        scopes,
        model,
        mode,
        duration,
        audio,
        kind,
        unit,
    ) in ledger.queries.charge_facts(since=lo, until=hi, scope=scope):
        est, act = int(est_raw), int(act_raw)
        totals.setdefault(unit, _Sums()).add_one(status, est, act)
        base: dict[str, Key] = {
            "model": model or None,
            "mode": mode or None,
            "duration": None if duration is None else int(duration),
            "audio": bool(audio),
            "kind": kind or None,
            "status": status,
        }
        if time_dim:
            base[time_dim] = _time.day_key(_time.local_day(int(created), zone), time_dim)
        owners: list[str | None] = [None]
        if scope_dim is not None:
            names = [str(s) for s in json.loads(scopes)]
            owners = [s for s in names if scope_dim == "scope" or s.startswith(scope_dim + ":")]
        for owner in owners:
            if scope_dim is not None:
                base[scope_dim] = owner
            key = (tuple(base.get(d) for d in dims), str(unit))
            groups.setdefault(key, _Sums()).add_one(status, est, act)
    rows = _rows(dims, {key: sums.v for key, sums in groups.items()})
    return rows, _totals({unit: sums.v for unit, sums in totals.items()})


def _add(totals: dict[str, list[int]], unit: str, sums: Sequence[int]) -> None:
    acc = totals.setdefault(unit, [0] * 9)
    acc[:] = [a + int(b) for a, b in zip(acc, sums, strict=True)]


def _unit_order(unit: str) -> tuple[int, str]:
    return (UNITS.index(unit) if unit in UNITS else len(UNITS), unit)


def sort_units(units: Iterable[str]) -> tuple[str, ...]:
    """Distinct units in :data:`kling_cost.budgets.UNITS` order (``units``, ``credits``)."""
    return tuple(sorted(set(units), key=_unit_order))


def _totals(totals: dict[str, list[int]]) -> tuple[ReportRow, ...]:
    """One total per unit, in :data:`UNITS` order."""
    return tuple(ReportRow.of({}, totals[u], u) for u in sort_units(totals))


def _sort_key(key: tuple[tuple[Key, ...], str]) -> tuple[Any, ...]:
    values, unit = key
    return (
        tuple((v is None, f"{v:012d}" if isinstance(v, int) else str(v)) for v in values),
        _unit_order(unit),
    )


def _rows(dims: tuple[str, ...], groups: Groups) -> tuple[ReportRow, ...]:
    """One row per (group, unit): sorted by the group, then the unit."""
    return tuple(
        ReportRow.of(dict(zip(dims, key[0], strict=True)), groups[key], key[1])
        for key in sorted(groups, key=_sort_key)
    )
