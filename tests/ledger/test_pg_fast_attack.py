"""Attacks on PostgreSQL's one-round-trip path (review of issue 17): odd input, lost
connections, and rows compared with the general path's; each test names what broke."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kling_cost.errors import ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.pg_fast import FastPath
from tests.helpers import FakeClock, fresh_postgres_url, need_postgres

pytestmark = pytest.mark.postgres

SUB_MS = datetime(2026, 6, 15, 12, 0, 0, 600, tzinfo=UTC)
"""A time 0.6 ms past a millisecond: a lease with a sub-millisecond part rounds across it."""


@pytest.fixture
def pair() -> Iterator[tuple[Ledger, Ledger, FakeClock]]:
    """A fast ledger and a general one (``_fast = None``), on one clock, warm."""
    need_postgres()
    clock = FakeClock(SUB_MS)
    ledgers = [open_ledger(fresh_postgres_url(), clock=clock) for _ in range(2)]
    ledgers[1]._fast = None
    try:
        for ledger in ledgers:
            ledger.set_budget("project:a", limit="10", window="day")
            for _ in range(2):
                ledger.release(ledger.reserve("0.001", ["project:a"]))
        assert isinstance(ledgers[0]._fast, FastPath)
        yield ledgers[0], ledgers[1], clock
    finally:
        for ledger in ledgers:
            ledger.backend.drop_schema()  # type: ignore[attr-defined]
            ledger.close()


def _lease(ledger: Ledger, res_id: str) -> tuple[Any, ...]:
    with ledger.transaction() as cur:
        cur.execute("SELECT created_at, expires_at, status FROM reservations WHERE id = ?", (res_id,))
        return tuple(cur.fetchone())


def test_a_lease_with_a_sub_millisecond_part_is_the_general_paths(
    pair: tuple[Ledger, Ledger, FakeClock],
) -> None:
    """The fast path floored the ttl alone (``ttl // 1 ms``) where the general path floors
    ``now + ttl``: a 0.5 ms lease lapsed at once (its commit refused as expired) on one path
    and lasted a millisecond on the other."""
    fast, general, _clock = pair
    ttl = timedelta(microseconds=500)
    leases = []
    for ledger in (fast, general):
        res = ledger.reserve("1", ["project:a"], ttl=ttl)
        leases.append(_lease(ledger, res.id))
        assert ledger.commit(res).status == "committed"
    assert leases[0] == leases[1]
    for ledger in (fast, general):
        res = ledger.reserve("1", ["project:a"])
        ledger.extend(res, timedelta(hours=1, microseconds=700))
        leases.append(_lease(ledger, res.id))
    assert leases[2] == leases[3]


@pytest.mark.parametrize("where", ["reserve", "extend", "attach_task"])
def test_a_lease_beyond_any_date_is_refused_and_holds_nothing(
    pair: tuple[Ledger, Ledger, FakeClock], where: str
) -> None:
    """A ttl of 10**8 days: the fast path wrote the reservation (its amount held for ever)
    and then failed with OverflowError, as did every later listing of reservations; the
    general path failed with OverflowError too. Both refuse it now, nothing held."""
    for ledger in pair[:2]:
        huge = timedelta(days=10**8)
        held = None if where == "reserve" else ledger.reserve("1", ["project:a"])
        with pytest.raises(ValidationError, match="ttl"):
            if where == "reserve":
                ledger.reserve("1", ["project:a"], ttl=huge)
            elif where == "extend":
                ledger.extend(held, huge)  # type: ignore[arg-type]
            else:
                ledger.attach_task(held, "t-1", ttl=huge)  # type: ignore[arg-type]
        assert ledger.usage("project:a", "day").reserved == (Decimal("1") if held else Decimal("0"))
        assert all(r.expires_at.year < 2200 for r in ledger.reservations())


@pytest.mark.parametrize("duration", ["\u00b2", "9" * 5000, "99999999999", 2**40, -5, True, " 5"])
def test_a_duration_no_charge_row_can_hold_never_stops_a_reservation_or_its_commit(
    pair: tuple[Ledger, Ledger, FakeClock], duration: object
) -> None:
    """``metadata={"duration": ...}``: ``"²"`` (a digit to ``str.isdigit``, not to ``int``) or
    5000 digits raised ValueError, more than an INTEGER failed the charge's INSERT. On the
    general path every commit of the reservation failed (Kling's charge never recorded); on
    the fast path the reservation itself raised after holding its amount (no id to release)."""
    for ledger in pair[:2]:
        res = ledger.reserve("1", ["project:a"], metadata={"duration": duration})
        assert ledger.commit(res).status == "committed"
        (charge,) = [c for c in ledger.charges() if c.reservation_id == res.id]
        assert charge.duration is None
        assert ledger.usage("project:a", "day").used == Decimal("1")


def test_a_duration_in_range_is_kept(pair: tuple[Ledger, Ledger, FakeClock]) -> None:
    for ledger in pair[:2]:
        for duration, kept in (("10", 10), (5, 5), ("0", 0), (2**31 - 1, 2**31 - 1)):
            res = ledger.reserve("0.1", ["project:a"], metadata={"duration": duration})
            ledger.commit(res)
            (charge,) = [c for c in ledger.charges() if c.reservation_id == res.id]
            assert charge.duration == kept
