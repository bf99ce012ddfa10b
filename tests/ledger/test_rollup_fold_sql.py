"""Outside review of the one-statement PostgreSQL fold (_FOLD_PG, commit 13c5f62).

The fold itself matched the Python path (rollup_rows(rollup_values(...))) on every input tried:
boundary and pre-1970 created_at, NULL/empty model and mode, scopes JSON with whitespace,
reordering, duplicates and \\u escapes, both units, all statuses, batch sizes 1/7/20,000, and
concurrent folds and commits. test_fold_matches_python_sums keeps that as a guard.

What fails: a report read from the rollup of a charge made before 1970 (its hour bucket is
negative) in a zone that is not UTC. The rows the fold wrote are right (they equal SQLite's
settle-time rows); the read computes the local day as ``(bucket + offset) / 86400000``, an SQL
integer division that truncates toward zero, where the day of a negative bucket needs floor
division (ledger/rollup_read.py). Both backends give the same wrong answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.rollup import SUM_COLUMNS, rollup_rows, rollup_values
from kling_cost.ledger.rollup_fold import fold
from kling_cost.reports import report
from tests.helpers import FakeClock

H, D = 3_600_000, 86_400_000


def _insert(led: Ledger, rows: list[tuple]) -> None:
    with led.transaction() as cur:
        for st, created, est, act, model, mode, unit, scopes in rows:
            cur.execute(
                "INSERT INTO charges (reservation_id, idempotency_key, status, created_at, settled_at, "
                "estimate_milli, actual_milli, model, mode, unit, scopes, metadata) "
                "VALUES ('r', 'k', ?, ?, 0, ?, ?, ?, ?, ?, ?, '{}') RETURNING id",
                (st, created, est, act, model, mode, unit, scopes),
            )
            cur.execute("INSERT INTO rollup_pending (charge_id) VALUES (?)", (cur.fetchone()[0],))


def _expected(rows: list[tuple]) -> dict[tuple, tuple]:
    sums: dict[tuple, list[int]] = {}
    for st, created, est, act, model, mode, unit, scopes in rows:
        for row in rollup_rows(
            [str(s) for s in json.loads(scopes)], rollup_values(st, created, est, act, model, mode, unit)
        ):
            found = sums.setdefault(row[:6], [0] * len(SUM_COLUMNS))
            for i, value in enumerate(row[7:]):
                found[i] += value
    return {k: tuple(v) for k, v in sums.items()}


def _rollup(led: Ledger) -> dict[tuple, tuple]:
    with led.transaction() as cur:
        cur.execute(
            "SELECT scope, grain, bucket, model, mode, unit, "
            + ", ".join(f"SUM({c})" for c in SUM_COLUMNS)
            + " FROM report_rollup GROUP BY scope, grain, bucket, model, mode, unit"
        )
        return {tuple(r[:6]): tuple(int(x) for x in r[6:]) for r in cur.fetchall()}


@pytest.mark.parametrize("batch", [1, 7, 20_000])
def test_fold_matches_python_sums(pg_url: str, batch: int) -> None:
    """Guard (passes): the server's sums are the Python path's, row for row."""
    creates = [0, -1, 1, H - 1, H, -H, -H - 1, D - 1, D, -D, -D - 1, -10 * D - 5, 2**53 + 7]
    scopes = [
        '["account", "project:a"]',
        '[ "project:a" , "account" ]',
        '["account","account"]',
        '["key:\\u0061"]',
        '["key:a"]',
        '["k:\\u00e9t\\u00e9", "k:a\\/b"]',
        "[]",
    ]
    rnd = random.Random(7)
    rows = [
        (
            rnd.choice(["succeeded", "failed", "cache_hit"]),
            rnd.choice(creates),
            rnd.choice([0, 7, 2**40, -5]),
            rnd.choice([0, 3, 2**41]),
            rnd.choice([None, "", "m"]),
            rnd.choice([None, "", "pro"]),
            rnd.choice(["units", "credits"]),
            rnd.choice(scopes),
        )
        for _ in range(150)
    ]
    with open_ledger(pg_url, fold_interval=None) as led:
        _insert(led, rows)
        assert fold(led, batch=batch) == len(rows)
        assert _rollup(led) == _expected(rows)


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.mark.parametrize("tz", ["Europe/Paris", "Asia/Tokyo"])
def test_rollup_report_of_a_charge_before_1970_is_the_charges_report(any_url: str, tz: str) -> None:
    """FAILS: 1969-12-31T23:00Z is 1970-01-01 in Paris and Tokyo; the rollup reports -1 charge
    on 1969-12-31 and 2 on 1970-01-01 (truncating division of a negative bucket)."""
    clock = FakeClock(datetime(1969, 12, 31, 23, 0, tzinfo=UTC))
    with open_ledger(any_url, clock=clock, fold_interval=None) as led:
        led.charge("1", ["project:a"])
        clock.set(datetime(1965, 3, 1, 0, 0, tzinfo=UTC))
        led.charge("2", ["project:a"])
        fast = report(led, "day", tz=tz, source="rollup")
        slow = report(led, "day", tz=tz, source="charges")
        assert [(r.key, r.charges) for r in slow.rows] == [
            ({"day": "1965-03-01"}, 1),
            ({"day": "1970-01-01"}, 1),
        ]
        assert [(r.key, r.charges, r.actual) for r in fast.rows] == [
            (r.key, r.charges, r.actual) for r in slow.rows
        ]
