"""Code written against earlier versions keeps working: the per-backend ledger classes (with a
DeprecationWarning naming what to use instead) and hooks that read the public models' fields."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from kling_cost.ledger import Ledger
from tests.helpers import FakeClock


def test_the_ledger_classes_of_earlier_versions_still_open_a_ledger(
    ledger_url: str, clock: FakeClock
) -> None:
    if ledger_url.startswith("sqlite"):
        paths, name = ("kling_cost.ledger", "kling_cost.ledger.sqlite"), "SQLiteLedger"
    else:
        paths, name = ("kling_cost.ledger.postgres",), "PostgresLedger"
    for path in paths:
        old = getattr(importlib.import_module(path), name)
        with pytest.warns(DeprecationWarning, match=r"use kling_cost.open_ledger\(url\)"):
            ledger = old(ledger_url, clock=clock)
        with ledger:
            assert isinstance(ledger, Ledger) and isinstance(ledger, old)
            ledger.set_budget("project:a", 10)
            ledger.commit(ledger.reserve(4, ["project:a"]), 3)
            assert ledger.usage("project:a").used >= 3
        assert name not in importlib.import_module(path).__dict__.get("__all__", ())
    with pytest.raises(ImportError):
        exec("from kling_cost.ledger import NoSuchLedger")  # other names still fail as before


class EarlierHook:
    """A hook as written when hooks were given the public models (Decimal amounts, datetimes)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def after_reserve(self, cur: Any, now: datetime, reservation: Any, states: Sequence[Any]) -> None:
        self.seen.append(("reserve", (reservation.amount, reservation.created_at, reservation.expires_at)))
        self.seen.append(("limit", states[0].budget.limit))

    def after_settle(self, cur: Any, now: datetime, charge: Any, states: Sequence[Any]) -> None:
        self.seen.append(("settle", charge.actual_milli))

    def after_budget_set(self, cur: Any, now: datetime, budget: Any, previous: Any) -> None:
        self.seen.append(("budget", (budget.limit, budget.max_per_request)))

    def after_refusal(self, cur: Any, now: datetime, refusal: Any, scopes: Sequence[str]) -> None: ...


def test_a_hook_written_for_the_public_models_still_reads_them(ledger: Ledger) -> None:
    hook = EarlierHook()
    ledger.hooks.append(hook)
    ledger.set_budget("project:a", "12.5", max_per_request="5")
    held = ledger.reserve("4.25", ["project:a"])
    ledger.commit(held, "4.125")
    assert hook.seen == [
        ("budget", (Decimal("12.5"), Decimal("5"))),
        ("reserve", (Decimal("4.25"), held.created_at, held.expires_at)),
        ("limit", Decimal("12.5")),
        ("settle", 4125),  # the new fields are thousandths
    ]
    assert isinstance(hook.seen[1][1][0], Decimal)
