"""``Ledger.prompt_costs``: the costliest prompts by prompt hash, per unit (both backends)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from kling_cost.errors import ValidationError
from kling_cost.ledger import Ledger
from tests.helpers import FakeClock
from tests.reports.seeds import seed_glance, seed_mixed


def expected(ledger: Ledger, since: datetime | None = None) -> dict[str, list[tuple[str, Decimal, int]]]:
    """The same ranking, computed from the raw charges in Python."""
    spent: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for c in ledger.charges(since=since):
        if c.prompt_hash is not None:
            spent[(c.unit, c.prompt_hash)] += c.actual
            count[(c.unit, c.prompt_hash)] += 1
    out: dict[str, list[tuple[str, Decimal, int]]] = defaultdict(list)
    for (unit, h), amount in sorted(spent.items(), key=lambda kv: (-kv[1], kv[0][1])):
        if amount:
            out[unit].append((h, amount, count[(unit, h)]))
    return out


def test_prompt_costs_rank_prompts_by_what_they_cost(ledger: Ledger, clock: FakeClock) -> None:
    seed_glance(ledger, clock)
    found = ledger.prompt_costs()
    assert [(p.prompt_preview, p.actual, p.charges, p.models, p.unit) for p in found] == [
        ("a red fox runs through snow", Decimal("35"), 2, ("kling-v2-1", "kling-v1-6"), "units"),
        ("dragon over the mountains", Decimal("20"), 1, ("kling-v2-6",), "units"),
        ("city at night, rain", Decimal("12.5"), 1, ("kling-v2-1",), "units"),
        ("product shot of a shoe", Decimal("10"), 4, ("kling-v1-6",), "units"),
        ("logo sketch", Decimal("0.125"), 1, ("kling-v1",), "units"),
    ]
    assert [(p.prompt_hash, p.actual, p.charges) for p in found] == expected(ledger)["units"][:5]
    assert str(found[0].actual) == "35.000" and found[0].to_dict()["actual"] == "35.000"
    # Failed and cached prompts cost nothing: never among the costliest, however many.
    previews = {p.prompt_preview for p in ledger.prompt_costs(limit=100)}
    assert "storm at sea" not in previews and "a fox" not in previews and "a cat" in previews
    # The period and the scope narrow it.
    june14 = ledger.prompt_costs(
        since=datetime(2026, 6, 14, tzinfo=UTC), until=datetime(2026, 6, 15, tzinfo=UTC)
    )
    assert [(p.prompt_preview, p.actual, p.charges) for p in june14] == [
        ("a red fox runs through snow", Decimal("20"), 1),
        ("city at night, rain", Decimal("12.5"), 1),
        ("logo sketch", Decimal("0.125"), 1),
        ("a cat", Decimal("0.1"), 1),
    ]
    ads = ledger.prompt_costs(scope="project:ads", limit=1)
    assert [(p.prompt_preview, p.actual) for p in ads] == [("product shot of a shoe", Decimal("10"))]
    with pytest.raises(ValidationError, match="limit must be"):
        ledger.prompt_costs(limit=0)


def test_prompt_costs_never_rank_units_against_credits(ledger: Ledger, clock: FakeClock) -> None:
    seed_mixed(ledger, clock)
    found = ledger.prompt_costs(limit=1)  # one per unit: 3 units and 70 credits are not compared
    assert [(p.unit, p.actual) for p in found] == [("units", Decimal("3")), ("credits", Decimal("70"))]
    both = ledger.prompt_costs()
    want = expected(ledger)
    assert [(p.prompt_hash, p.actual, p.charges) for p in both if p.unit == "credits"] == want["credits"]
    assert [(p.prompt_hash, p.actual, p.charges) for p in both if p.unit == "units"] == want["units"]
    assert ledger.prompt_costs(since=datetime(2026, 7, 1, tzinfo=UTC)) == []
    # The same prompt charged in both units: two entries, each counting only its own unit.
    twice = ledger.reserve(
        1, ["project:film"], unit="credits", metadata={"model": "kling-v1-6", "prompt": "owl 15"}
    )
    ledger.commit(twice, 1)
    owl = [p for p in ledger.prompt_costs(limit=3) if p.prompt_preview == "owl 15"]
    assert [(p.unit, p.actual, p.charges, p.models) for p in owl] == [
        ("units", Decimal("3"), 1, ("kling-v2-1",)),
        ("credits", Decimal("1"), 1, ("kling-v1-6",)),
    ]
    assert "owl 15" not in {p.prompt_preview for p in ledger.prompt_costs(limit=2) if p.unit == "credits"}
