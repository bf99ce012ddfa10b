"""The bill as the dashboard shows it (``/api/bill``): where every budget is heading, the
resource packs and what will expire unused, and the last reconciliation with Kling's bill.

Read only: the projection is computed at ``now`` (:func:`kling_cost.bill.forecast.forecast`),
the packs are the snapshot ``kling-cost packs`` last stored (Kling is not asked), the
reconciliation is the last run ``kling-cost reconcile`` recorded. Amounts are exact decimal
strings; every instant is given as ISO 8601 (``at``) and, for drawing, as the wall time in the
dashboard's time zone without offset (``local``), which is what a chart's date axis reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..bill.forecast import Projection, forecast
from ..bill.packs import LAG_NOTE, PackSnapshot, PackStatus, load_snapshot
from ..bill.reconcile import DIFFERENCES, last_run
from ..budgets import validate_tz
from ..ledger import Ledger
from ..ledger.runs_store import BillRun

__all__ = ["MAX_DIFFERENCES", "bill_view", "pack_rows", "projection_rows", "reconciliation_view"]

MAX_DIFFERENCES = 50
"""Most differences of the last run ``/api/bill`` lists (``differences_total`` counts them all)."""

FORECAST_RULE = (
    "projected = used + reserved + the recent rate x the time left in the window; the rate is "
    "what was charged or held over the last 24 h of the window (lifetime: the last 7 days, "
    "projected 7 days ahead); no projection before 3 charges or holds and 10% of the window "
    "(lifetime: 24 h of spending)"
)


_MS = timedelta(milliseconds=1)


def _local(at: datetime | None, zone: ZoneInfo) -> str | None:
    """Wall time in ``zone``, to the second, without offset: ``2026-06-15T18:00:00``."""
    return None if at is None else at.astimezone(zone).replace(tzinfo=None).isoformat(timespec="seconds")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _point(at: datetime, value: Any, zone: ZoneInfo) -> dict[str, Any]:
    return {"at": at.isoformat(), "local": _local(at, zone), "value": str(value)}


def projection_rows(projections: list[Projection], tz: str = "UTC") -> list[dict[str, Any]]:
    """Each projection as :meth:`Projection.to_dict` plus ``level`` (used + reserved now),
    ``start``/``end`` of its window and ``points``: the line from now (the level) through the
    instant it reaches the limit (when that is before the horizon) to the horizon (the
    projected value); ``points`` is empty without a projection (``reason`` says why)."""
    zone = ZoneInfo(validate_tz(tz))
    out = []
    for p in projections:
        points: list[dict[str, Any]] = []
        if p.projected is not None and p.horizon is not None:
            points.append(_point(p.at, p.level, zone))
            if p.runs_out_at is not None and p.at < p.runs_out_at < p.horizon:
                points.append(_point(p.runs_out_at, p.limit, zone))
            points.append(_point(p.horizon, p.projected, zone))
        out.append(
            {
                **p.to_dict(),
                "level": str(p.level),
                "start": _iso(p.window.start),
                "end": _iso(p.window.end),
                "runs_out_local": _local(p.runs_out_at, zone),
                "horizon_local": _local(p.horizon, zone),
                "points": points,
            }
        )
    return out


def _local_span_ms(start: datetime, end: datetime, zone: ZoneInfo) -> int:
    """Milliseconds between two instants as wall times in ``zone`` (how a date axis measures)."""
    a = start.astimezone(zone).replace(tzinfo=None)
    b = end.astimezone(zone).replace(tzinfo=None)
    return (b - a) // _MS


def pack_rows(snapshot: PackSnapshot, tz: str = "UTC") -> list[dict[str, Any]]:
    """Each pack as :meth:`PackStatus.to_dict` plus, for the timeline, ``start_local`` (its
    effective time, else its purchase time), ``end_local`` (its expiry) and ``span_ms`` (the
    bar's length on a date axis; None without both ends), soonest expiry first."""
    zone = ZoneInfo(validate_tz(tz))

    def order(p: PackStatus) -> tuple[bool, datetime, str, str]:
        return (p.invalid_time is None, p.invalid_time or snapshot.taken_at, p.name, p.id)

    out = []
    for p in sorted(snapshot.packs, key=order):
        start = p.effective_time or p.purchase_time
        end = p.invalid_time
        out.append(
            {
                **p.to_dict(),
                "start_local": _local(start, zone),
                "end_local": _local(end, zone),
                "span_ms": None if start is None or end is None else _local_span_ms(start, end, zone),
            }
        )
    return out


def _packs_view(snapshot: PackSnapshot | None, tz: str) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    zone = ZoneInfo(validate_tz(tz))
    return {
        "taken_at": snapshot.taken_at.isoformat(),
        "taken_local": _local(snapshot.taken_at, zone),
        "window_start": snapshot.window_start.isoformat(),
        "window_end": snapshot.window_end.isoformat(),
        "burn_per_day": {k: str(v) for k, v in snapshot.burn_per_day.items()},
        "note": LAG_NOTE,
        "packs": pack_rows(snapshot, tz),
    }


def reconciliation_view(run: BillRun | None, limit: int = MAX_DIFFERENCES) -> dict[str, Any] | None:
    """The run as :meth:`BillRun.to_dict` with its first ``limit`` differences only, their
    number (``differences_total``), the ``counts`` of each category and whether it is
    ``clean``; None without a run."""
    if run is None:
        return None
    data = run.to_dict()
    counts = run.summary.get("counts", {})
    data["differences"] = data["differences"][:limit]
    data["differences_total"] = len(run.differences)
    data["counts"] = dict(counts) if isinstance(counts, dict) else {}
    data["clean"] = run.status == "clean"
    data["difference_categories"] = list(DIFFERENCES)
    return data


def bill_view(ledger: Ledger, now: datetime | None = None, *, tz: str = "UTC") -> dict[str, Any]:
    """What ``/api/bill`` returns, at ``now`` (default: the ledger's clock), instants drawn in
    ``tz``: ``generated_at``, ``now_local``, ``tz``, ``forecast`` (``rule`` and
    ``projections``: one per budget, see :func:`projection_rows`), ``packs`` (the stored
    snapshot, see :func:`pack_rows`; null before ``kling-cost packs`` ever ran) and
    ``reconciliation`` (the last run, see :func:`reconciliation_view`; null before
    ``kling-cost reconcile`` ever ran)."""
    zone_name = validate_tz(tz)
    moment = now or ledger.clock()
    return {
        "generated_at": moment.isoformat(),
        "now_local": _local(moment, ZoneInfo(zone_name)),
        "tz": zone_name,
        "forecast": {
            "rule": FORECAST_RULE,
            "projections": projection_rows(forecast(ledger, moment), zone_name),
        },
        "packs": _packs_view(load_snapshot(ledger), zone_name),
        "reconciliation": reconciliation_view(last_run(ledger)),
    }
