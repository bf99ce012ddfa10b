"""Item 8 of issue 11: scopes are exact on both backends (case matters; SQLite's LIKE ignored
it) and a scope with a trailing newline or a control character is refused."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest

from kling_cost import ValidationError
from kling_cost.budgets import validate_scope
from kling_cost.ledger import Ledger
from kling_cost.reports import export_charges, latest_charges, report


@pytest.mark.parametrize(
    "bad",
    [
        "project:a\n",
        "account\n",
        "project:a\r\n",
        "\nproject:a",
        "project:a\x00",
        "project:\ta",
        "project:a ",
    ],
)
def test_a_scope_with_a_newline_or_control_character_is_refused(ledger: Ledger, bad: str) -> None:
    with pytest.raises(ValidationError, match="is not valid"):
        validate_scope(bad)
    with pytest.raises(ValidationError):
        ledger.set_budget(bad, 10)
    with pytest.raises(ValidationError):
        ledger.reserve(1, [bad])
    assert ledger.budgets() == [] and ledger.reservations() == []


def _spend(ledger: Ledger) -> None:
    for scope, amount, model in (("project:film", 5, "kling-v2-6"), ("project:Film", 7, "kling-v2-1")):
        res = ledger.reserve(amount, [scope, "key:" + scope.split(":")[1]], metadata={"model": model})
        ledger.commit(res, amount, task_id=f"t-{scope}")


def test_scope_filters_are_case_sensitive_everywhere(ledger: Ledger) -> None:
    _spend(ledger)
    assert [c.actual for c in ledger.charges("project:Film")] == [7]
    assert [c.actual for c in ledger.charges("project:film")] == [5]
    assert ledger.charges("project:FILM") == []
    assert [c.actual for c in latest_charges(ledger, scope="project:Film")] == [7]
    for source in ("rollup", "charges"):
        rep = report(ledger, "day", since=None, scope="project:Film", source=source)
        assert rep.total_for("units").actual == 7, source
    out = io.StringIO()
    assert export_charges(ledger, out, scope="project:Film") == 1
    assert json.loads(out.getvalue(), parse_float=Decimal)["credits"] == 7
    consumers = ledger.outbox.top_consumers("project:Film", None, None)
    assert [(c.by, c.name, c.amount) for c in consumers] == [
        ("model", "kling-v2-1/-", 7),
        ("scope", "key:Film", 7),
    ]


def test_grouping_by_a_scope_kind_keeps_scopes_apart(ledger: Ledger) -> None:
    _spend(ledger)
    for source in ("rollup", "charges"):
        rep = report(ledger, "project", since=None, source=source)
        assert {r.key["project"]: r.actual for r in rep.rows} == {"project:Film": 7, "project:film": 5}, (
            source
        )
        keys = report(ledger, "key", since=None, source=source)
        assert {r.key["key"]: r.actual for r in keys.rows} == {"key:Film": 7, "key:film": 5}, source
