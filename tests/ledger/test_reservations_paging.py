"""Every reservation can be read, not only the newest 1000: ``settle_pending`` must see old holds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kling_cost.ledger import Ledger, queries
from tests.helpers import FakeClock


def test_every_reservation_is_read_a_page_at_a_time(
    ledger: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "PAGE", 4)
    made = []
    for i in range(11):
        made.append(ledger.reserve(1, idempotency_key=f"k{i}", ttl=timedelta(hours=5)))
        if i % 3 == 0:  # some share a millisecond: the keyset must not skip or repeat them
            clock.advance(milliseconds=1)
    ledger.release(made[0])
    held = ledger.reservations(status="reserved", limit=None)
    assert sorted(r.id for r in held) == sorted(r.id for r in made[1:])
    assert len({r.id for r in held}) == len(held) == 10
    assert [r.created_at for r in held] == sorted((r.created_at for r in held), reverse=True)
    assert len(ledger.reservations(status="reserved", limit=6)) == 6  # a limit still holds across pages
    since = made[7].created_at
    recent = ledger.reservations(status="reserved", limit=None, since=since)
    assert {r.id for r in recent} == {r.id for r in made[1:] if r.created_at >= since}
    assert len(ledger.reservations(limit=None)) == 11


def test_settle_pending_sees_holds_beyond_the_first_page(
    ledger: Ledger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard asks for every held reservation: with pages of 2, all 5 holds are listed."""
    from kling_cost.guard._core import GuardCore
    from kling_cost.guard.settle import Settler

    monkeypatch.setattr(queries, "PAGE", 2)
    for i in range(5):
        ledger.reserve(1, idempotency_key=f"h{i}")
        clock.advance(milliseconds=1)
    core = GuardCore(
        ledger, catalog=None, scopes=(), ttl=timedelta(minutes=30), cache=False, max_per_request=None
    )
    assert len(Settler(ledger, core).unsettled(clock() - timedelta(days=2))) == 5
