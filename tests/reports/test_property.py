"""Reports (read from the rollup where possible) and exports agree with the raw charges table,
per unit: charges in units and in credits are summed apart, never together."""

from __future__ import annotations

import io
import json
import tempfile
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_cost.ledger import Charge, Ledger, open_ledger
from kling_cost.reports import export_charges, report
from tests.helpers import FakeClock

BASE = datetime(2026, 3, 1, tzinfo=UTC)  # spans the EU/US DST changes of March
# Whole-hour zones read day rows plus the hours across local midnight: the first hour of each
# UTC day anchors (Paris +1/+2, Tokyo +9) or the last one does (New York -5/-4, Los Angeles,
# Kiritimati +14); Kolkata, Kathmandu and Lord Howe (half-hour DST) read the raw charges.
ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Pacific/Kiritimati",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
]
ROLLUP_ZONES = {
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Pacific/Kiritimati",
}
GROUPINGS = [
    ("day",),
    ("day", "model"),
    ("week", "mode"),
    ("month", "status"),
    ("model", "mode"),
    ("project",),
    ("key", "model"),
    ("scope",),
    ("status",),
    ("duration", "audio"),
    ("kind", "day"),
    (),
]

charge_st = st.fixed_dictionaries(
    {
        "minute": st.integers(0, 60 * 24 * 45),
        "amount": st.integers(1, 50_000),
        "actual": st.integers(0, 60_000),
        "status": st.sampled_from(["succeeded", "succeeded", "failed", "cache_hit"]),
        "model": st.sampled_from(["kling-v2-1", "kling-v1-6", None]),
        "mode": st.sampled_from(["std", "pro", None]),
        "duration": st.sampled_from([5, 10, None]),
        "audio": st.booleans(),
        "kind": st.sampled_from(["text2video", "image2video", None]),
        "unit": st.sampled_from(["units", "credits"]),
        "scopes": st.lists(
            st.sampled_from(["project:a", "project:b", "key:k1", "key:k2", "user:u"]), max_size=3
        ),
    }
)


def fill(ledger: Ledger, clock: FakeClock, charges: list[dict[str, Any]]) -> None:
    for c in charges:
        clock.set(BASE + timedelta(minutes=c["minute"]))
        meta = {k: c[k] for k in ("model", "mode", "duration", "kind") if c[k] is not None}
        meta["audio"] = c["audio"]
        meta["prompt"] = f"a cat, take {c['minute']}"
        amount = Decimal(c["amount"]) / 1000
        if c["status"] == "cache_hit":
            ledger.record_cache_hit(amount, c["scopes"], task_id="cached", metadata=meta, unit=c["unit"])
            continue
        res = ledger.reserve(amount, c["scopes"], metadata=meta, unit=c["unit"])
        if c["status"] == "failed":
            ledger.attach_task(res, f"task-{c['minute']}")
            ledger.release(res)
        else:
            ledger.commit(res, Decimal(c["actual"]) / 1000, task_id=f"task-{c['minute']}")


def expected(
    charges: list[Charge], by: tuple[str, ...], tz: str
) -> tuple[dict[Any, list[Any]], dict[str, list[Any]]]:
    """A plain Python aggregation of ledger.charges(), independent of the reports module:
    sums per (group, unit) and totals per unit."""
    zone = ZoneInfo(tz)
    out: dict[Any, list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0), Decimal(0)])
    totals: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0), Decimal(0)])

    def add(acc: list[Any], c: Charge) -> None:
        acc[0] += 1
        acc[1] += c.estimate if c.status == "succeeded" else 0
        acc[2] += c.actual
        acc[3] += c.estimate if c.status == "failed" else 0
        acc[4] += c.saved

    for c in charges:
        add(totals[c.unit], c)
        local = c.created_at.astimezone(zone).date()
        monday = local - timedelta(days=local.weekday())
        values: dict[str, Any] = {
            "day": local.isoformat(),
            "week": f"{monday.isocalendar().year}-W{monday.isocalendar().week:02d}",
            "month": local.strftime("%Y-%m"),
            "model": c.model,
            "mode": c.mode,
            "duration": c.duration,
            "audio": c.audio,
            "kind": c.kind,
            "status": c.status,
        }
        owners: list[str | None] = [None]
        kind = next((d for d in by if d in ("scope", "project", "key", "user")), None)
        if kind:
            owners = [s for s in c.scopes if kind == "scope" or s.startswith(kind + ":")]
        for owner in owners:
            if kind:
                values[kind] = owner
            add(out[(tuple(values[d] for d in by), c.unit)], c)
    return dict(out), dict(totals)


def summary(row: Any) -> list[Any]:
    return [row.charges, row.estimate, row.actual, row.refunded, row.saved]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    charges=st.lists(charge_st, max_size=25),
    tz=st.sampled_from(ZONES),
    by=st.sampled_from(GROUPINGS),
    since_day=st.one_of(st.none(), st.integers(0, 40)),
    length=st.integers(1, 30),
    hours=st.one_of(st.none(), st.tuples(st.integers(0, 23), st.integers(0, 23))),
)
def test_reports_and_exports_match_the_raw_charges(
    charges: list[dict[str, Any]],
    tz: str,
    by: tuple[str, ...],
    since_day: int | None,
    length: int,
    hours: tuple[int, int] | None,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        clock = FakeClock(BASE)
        ledger = open_ledger(f"sqlite:///{Path(folder) / 'p.db'}", clock=clock)
        try:
            fill(ledger, clock, charges)
            since: date | datetime | None = None
            until: date | datetime | None = None
            start = end = None
            if since_day is not None and hours is not None:
                # Instants on UTC hours: whole UTC days in the middle, hour rows at both ends.
                start = BASE + timedelta(days=since_day, hours=hours[0])
                end = start + timedelta(days=length - 1, hours=hours[1])
                since, until = start, end
            elif since_day is not None:
                day = date(2026, 3, 1) + timedelta(days=since_day)
                since, until = day, day + timedelta(days=length - 1)
                start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))
                last = day + timedelta(days=length)
                end = datetime(last.year, last.month, last.day, tzinfo=ZoneInfo(tz))
            rep = report(ledger, by, since=since, until=until, tz=tz)
            raw = ledger.charges(since=start, until=end)
            want, totals = expected(raw, by, tz)
            got = {(tuple(r.key[d] for d in by), r.unit): summary(r) for r in rep.rows}
            assert got == want
            assert {t.unit: summary(t) for t in rep.totals} == totals
            assert [t.unit for t in rep.totals] == [u for u in ("units", "credits") if u in totals]
            if tz in ROLLUP_ZONES and set(by) <= {
                "day",
                "week",
                "month",
                "model",
                "mode",
                "status",
                "project",
                "key",
                "scope",
            }:
                assert rep.source == "rollup"
            out = io.StringIO()
            count = export_charges(ledger, out, "jsonl", since=since, until=until, tz=tz)
            lines = [json.loads(line, parse_float=Decimal) for line in out.getvalue().splitlines()]
            assert count == len(raw) == len(lines)
            for line, c in zip(lines, raw, strict=True):
                assert line["task_id"] == c.task_id
                assert Decimal(line["credits"]) == c.actual
                assert line["unit"] == c.unit
                assert line["timestamp"] == c.created_at.isoformat()
                assert (line["model"], line["mode"], line["duration"]) == (c.model, c.mode, c.duration)
                assert line["prompt_preview"] == c.prompt_preview
        finally:
            ledger.close()
