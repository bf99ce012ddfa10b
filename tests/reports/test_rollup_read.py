"""The rollup's read plan: day rows plus the hours across local midnight sum to each local day."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_cost.errors import StorageError
from kling_cost.ledger import Ledger, open_ledger, rollup_read
from kling_cost.ledger.rollup import BUCKET_MS, DAY_MS, GRAIN_DAY, GRAIN_HOUR
from kling_cost.ledger.schema import MIGRATIONS
from kling_cost.reports import report
from tests.helpers import FakeClock

H = BUCKET_MS
ORIGIN = 20_000 * DAY_MS  # 2024-10-04: any UTC midnight


def simulate(reads: list[rollup_read.Read], hours: dict[int, int]) -> dict[int | None, int]:
    """What the SQL of :func:`rollup_sums` computes from these reads, in plain Python."""
    days: dict[int, int] = defaultdict(int)
    for h, v in hours.items():
        days[h - h % DAY_MS] += v
    out: dict[int | None, int] = defaultdict(int)
    for read in reads:
        rows = days if read.grain == GRAIN_DAY else hours
        for bucket, value in rows.items():
            if read.window is not None:
                start = bucket - bucket % DAY_MS
                inside = read.lo is not None and read.hi is not None and read.lo <= start < read.hi
                if not inside or not read.window[0] <= bucket - start < read.window[1]:
                    continue
            elif (read.lo is not None and bucket < read.lo) or (read.hi is not None and bucket >= read.hi):
                continue
            key = None if read.offset is None else (bucket + read.offset) // DAY_MS
            out[key] += value
            if read.move:  # a moved hour: taken from the day its UTC day row was given to
                assert key is not None
                out[key + read.move] -= value
    return {k: v for k, v in out.items() if v}


@settings(max_examples=300, deadline=None)
@given(
    values=st.dictionaries(st.integers(0, 24 * 12 - 1), st.integers(1, 9), max_size=120),
    start=st.integers(0, 24 * 12),
    length=st.integers(0, 24 * 12),
    offset=st.one_of(st.none(), st.integers(-12, 14)),
    bounded=st.tuples(st.booleans(), st.booleans()),
)
def test_reads_sum_to_each_local_day(
    values: dict[int, int], start: int, length: int, offset: int | None, bounded: tuple[bool, bool]
) -> None:
    hours = {ORIGIN + h * H: v for h, v in values.items()}
    lo, hi = ORIGIN + start * H, ORIGIN + (start + length) * H
    if offset is None:  # no day column: the ends may be open
        lo_b, hi_b = (lo if bounded[0] else None), (hi if bounded[1] else None)
        reads = rollup_read.plan_reads(lo_b, hi_b, None)
        want = sum(v for h, v in hours.items() if (lo_b is None or h >= lo_b) and (hi_b is None or h < hi_b))
        assert simulate(reads, hours) == ({None: want} if want else {})
        assert all(r.window is None for r in reads)
        return
    reads = rollup_read.plan_reads(lo, hi, offset * H)
    want: dict[int | None, int] = defaultdict(int)
    for h, v in hours.items():
        if lo <= h < hi:
            want[(h + offset * H) // DAY_MS] += v
    assert simulate(reads, hours) == dict(want)
    # Never more than half a day of hour rows per UTC day, besides the two ends.
    per_day = [r.window[1] - r.window[0] for r in reads if r.window is not None]
    assert all(w <= DAY_MS // 2 for w in per_day)
    assert sum(1 for r in reads if r.grain == GRAIN_HOUR and r.window is None) <= 2


def test_reads_need_whole_hours() -> None:
    with pytest.raises(StorageError, match="whole UTC hours"):
        rollup_read.plan_reads(ORIGIN + 1, None, None)
    with pytest.raises(StorageError, match="whole UTC hours"):
        rollup_read.plan_reads(ORIGIN, ORIGIN + DAY_MS, 30 * 60_000)
    assert rollup_read.plan_reads(None, None, None) == [rollup_read.Read(GRAIN_DAY, None, None, None)]
    assert rollup_read.plan_reads(ORIGIN, ORIGIN + 3 * DAY_MS, 0) == [
        rollup_read.Read(GRAIN_DAY, ORIGIN, ORIGIN + 3 * DAY_MS, 0)
    ]


def seed_year(ledger: Ledger, clock: FakeClock) -> None:
    clock.set(datetime(2026, 1, 1, 5, 0, tzinfo=UTC))
    for i in range(60):
        meta = {"model": ("kling-v2-1", "kling-v1-6")[i % 2], "mode": ("std", "pro")[i % 3 == 0]}
        res = ledger.reserve("2", ["project:a" if i % 2 else "project:b", "key:k"], metadata=meta)
        if i % 7 == 3:  # a failed task: charged nothing, its estimate refunded
            ledger.attach_task(res, f"task-{i}")
            ledger.release(res)
        else:
            ledger.commit(res, "1.5")
        clock.advance(hours=149)  # 6 days and 5 hours: every hour of the day gets its turn


def test_both_grains_on_both_backends(ledger: Ledger, clock: FakeClock) -> None:
    seed_year(ledger, clock)
    ledger.rollup.fold()  # PostgreSQL's charges wait for a fold until a report reads
    with ledger.transaction() as cur:
        cur.execute(
            "SELECT grain, COUNT(*), SUM(s_n + f_n + c_n) FROM report_rollup GROUP BY grain ORDER BY grain"
        )
        counts = [(int(g), int(n), int(c)) for g, n, c in cur.fetchall()]
    assert [c[0] for c in counts] == [GRAIN_HOUR, GRAIN_DAY]
    assert counts[0][2] == counts[1][2] == 60 * 3  # every charge once per scope and grain
    now = clock()
    for tz in ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati"):
        for by in ("day,model", "week,status", "month,project", "model,mode", "key", "scope"):
            for since in ("365d", "30d", None):
                fast = report(ledger, by, since=since, tz=tz, now=now, source="rollup")
                slow = report(ledger, by, since=since, tz=tz, now=now, source="charges")
                assert fast.rows == slow.rows and fast.totals == slow.totals, (tz, by, since)


def rerun_migrations(ledger: Ledger, *versions: int) -> None:
    """Run these migrations' statements again, in one transaction, on a ledger whose rollup
    tables were put back in the shape they had before them (the other tables stay as they are:
    rerunning every later migration would add their columns twice)."""
    with ledger.transaction() as cur:
        for version, statements in MIGRATIONS:
            if version in versions:
                for statement in statements:
                    if callable(statement):
                        statement(cur, ledger.backend.dialect)
                        continue
                    cur.execute(
                        statement.replace("{id}", ledger.backend.id_column).replace(
                            "{without_rowid}", ledger.backend.without_rowid
                        )
                    )


def test_migration_5_derives_the_day_rows(
    ledger: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_year(ledger, clock)
    sums = "s_n, s_est, s_act, f_n, f_est, f_act, c_n, c_est, c_act"
    with ledger.transaction() as cur:  # back to the schema 4 table: hour rows only
        cur.execute(
            f"CREATE TABLE report_rollup_v4 AS SELECT scope, bucket, model, mode, {sums} "
            "FROM report_rollup WHERE grain = 0"
        )
        cur.execute("DROP TABLE report_rollup")
        cur.execute("ALTER TABLE report_rollup_v4 RENAME TO report_rollup")
    rerun_migrations(ledger, 5, 8, 12)  # the rollup's own: grains, then units, then shards
    for tz in ("UTC", "Asia/Tokyo"):
        fast = report(ledger, "day,model", tz=tz, source="rollup")
        assert fast.rows == report(ledger, "day,model", tz=tz, source="charges").rows
    assert report(ledger, (), source="rollup").total_for("units").actual == Decimal("1.5") * 51
    clock.advance(hours=1)
    ledger.commit(ledger.reserve("1", ["project:a"]), "1")  # upserts into the new key
    assert report(ledger, (), source="rollup").total_for("units").actual == Decimal("1.5") * 51 + 1


def test_sqlite_plans_use_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No read scans the rollup: each is a primary-key range or probe (the charges are not read)."""
    clock = FakeClock()
    path = tmp_path / "plan.db"
    ledger = open_ledger(f"sqlite:///{path}", clock=clock)
    captured: list[tuple[str, list[Any]]] = []
    real_query = rollup_read.sums_query

    def spy(*args: Any, **kwargs: Any) -> tuple[str, list[Any]]:
        captured.append(real_query(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(rollup_read, "sums_query", spy)
    try:
        seed_year(ledger, clock)
        now = clock()
        report(ledger, "day,model", since="365d", tz="UTC", now=now)
        report(ledger, "day,model", since="365d", tz="America/New_York", now=now)
        report(ledger, "project", since="30d", tz="Europe/Paris", now=now)
    finally:
        ledger.close()
    assert len(captured) == 4  # the project report reads its total on its own
    conn = sqlite3.connect(path)
    for sql, params in captured:
        steps = [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        reads = [s for s in steps if " r " in s + " " or "report_rollup" in s or "charges" in s]
        assert reads, steps
        for step in reads:  # SEARCH r USING PRIMARY KEY (grain=? AND scope=? AND bucket...)
            assert step.startswith("SEARCH ") and "USING PRIMARY KEY (grain=?" in step, steps
        assert any("scope=? AND bucket" in s for s in reads), steps
    conn.close()


def test_local_days_in_a_far_east_zone(ledger: Ledger, clock: FakeClock) -> None:
    """Kiritimati (+14): most of a UTC day is the next local day; a charge at 09:59 UTC is on
    the same local day as one at 10:00 UTC the day before."""
    for moment in ("2026-05-01T09:59", "2026-05-01T10:00", "2026-04-30T10:00", "2026-05-02T09:00"):
        clock.set(datetime.fromisoformat(moment).replace(tzinfo=UTC))
        ledger.commit(ledger.reserve("1", ["project:a"]))
    clock.set(datetime(2026, 5, 3, tzinfo=UTC))
    rep = report(ledger, "day", tz="Pacific/Kiritimati", since="5d", source="rollup")
    assert {r.key["day"]: r.charges for r in rep.rows} == {"2026-05-01": 2, "2026-05-02": 2}
    assert clock() - timedelta(days=2) == datetime(2026, 5, 1, tzinfo=UTC)
