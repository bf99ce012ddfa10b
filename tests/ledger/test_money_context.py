"""Item 7 of issue 11: exact money never depends on the caller's decimal context."""

from __future__ import annotations

import decimal
import io
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from kling_cost import estimate, parse_amount, parse_catalog, plan_batch
from kling_cost.ledger import Ledger
from kling_cost.reports import budget_status, export_charges, report

CATALOG = parse_catalog(
    'name="big"\nunit="credits"\n[usd_per_unit]\nvideo="0.0137"\n'
    '[[prices]]\nkind="tryon"\namount="1234.567"\neffective_from=2026-01-01\nsource="s"\n'
    '[[prices]]\nkind="video"\nper_second="0.3"\neffective_from=2026-01-01\nsource="s"\n'
)


@pytest.fixture(params=["prec6", "prec3-floor-untrapped", "prec6-inexact-trapped"])
def tiny_context(request: pytest.FixtureRequest) -> Iterator[decimal.Context]:
    """The caller's context: a tiny precision (and, in one case, nothing trapped; in another,
    every rounding trapped, as money code that wants to hear of any rounding sets it)."""
    saved = decimal.getcontext().copy()
    ctx = decimal.getcontext()
    if request.param == "prec6":
        ctx.prec = 6
    elif request.param == "prec6-inexact-trapped":
        ctx.prec = 6
        ctx.traps[decimal.Inexact] = ctx.traps[decimal.Rounded] = True
    else:
        ctx.prec, ctx.rounding = 3, decimal.ROUND_FLOOR
        ctx.traps = dict.fromkeys(ctx.traps, False)
    try:
        yield ctx
    finally:
        decimal.setcontext(saved)


def test_amounts_stay_exact_in_a_tiny_caller_context(ledger: Ledger, tiny_context: decimal.Context) -> None:
    assert parse_amount("1234.567") == Decimal("1234.567")
    ledger.set_budget("account", "2000", thresholds=["0.618033", "1"])
    ledger.set_budget("project:a", "1500")
    big = ledger.reserve("1234.567", ["project:a"], metadata={"model": "m"})
    assert str(big.amount) == "1234.567"
    ledger.commit(big)
    ledger.commit(ledger.reserve("1.5", ["project:a"]), "1.5")
    usage = ledger.usage("project:a")
    assert (str(usage.used), str(usage.remaining)) == ("1236.067", "263.933")
    assert str(ledger.usage("account").remaining) == "763.933"
    assert str(ledger.totals()["units"]["charged"]) == "1236.067"
    # 61.8033 % of 2000 is 1236.066: crossed by the second reservation, not the first
    [alert] = ledger.alerts(scope="account")
    assert (alert.threshold, str(alert.used), str(alert.reserved)) == ("0.618033", "1234.567", "1.500")
    assert budget_status(usage)["percent"] == "82.4"
    for source in ("rollup", "charges"):
        rep = report(ledger, "day", since=None, source=source)
        assert (str(rep.total_for("units").actual), str(rep.rows[0].actual)) == ("1236.067", "1236.067")
    out = io.StringIO()
    export_charges(ledger, out)
    assert [json.loads(line)["credits"] for line in out.getvalue().splitlines()] == [1234.567, 1.5]
    assert '"credits": 1234.567,' in out.getvalue()


def test_estimates_and_plans_stay_exact_in_a_tiny_caller_context(tiny_context: decimal.Context) -> None:
    one = estimate(kind="tryon", catalog=CATALOG)
    assert str(one.amount) == "1234.567"
    video = estimate(kind="text2video", duration=10, catalog=CATALOG)
    assert str(video.amount) == "3.000" and str(video.usd) == "0.0411000"
    plan = plan_batch([{"kind": "tryon"}, {"kind": "text2video", "duration": 10}], catalog=CATALOG)
    assert str(plan.total) == "1237.567"


def test_no_raw_invalid_operation_escapes(ledger: Ledger, tiny_context: decimal.Context) -> None:
    ledger.set_budget("account", "999999999999.999")
    res = ledger.reserve("999999999999.999")
    assert str(ledger.commit(res).actual) == "999999999999.999"
    assert str(ledger.usage("account").used) == "999999999999.999"


def test_storage_conversion_is_exact_whatever_the_precision(tiny_context: decimal.Context) -> None:
    from kling_cost import ValidationError
    from kling_cost.money import from_storage, to_storage

    assert to_storage(Decimal("1234.567")) == 1234567
    assert to_storage(Decimal("-0.5")) == -500 and to_storage(Decimal("7E+2")) == 700000
    assert str(from_storage(999999999999999)) == "999999999999.999"
    with pytest.raises(ValidationError, match=r"finer than 0\.001"):
        to_storage(Decimal("1." + "0" * 70 + "1"))  # 72 digits: no context may round it away
    with pytest.raises(ValidationError, match="too large"):
        to_storage(Decimal("1E+999999"))


PRICEY = parse_catalog(
    'name="pricey"\nunit="credits"\n[usd_per_unit]\nvideo="0.0137"\n'
    '[[prices]]\nkind="video"\nper_second="123.457"\neffective_from=2026-01-01\nsource="s"\n'
)


def test_refusals_and_plans_never_round_in_the_callers_context(
    ledger: Ledger, tiny_context: decimal.Context
) -> None:
    """Before: the guard's per-request refusal and a plan's USD figures were rounded (or, with
    rounding trapped, raised a raw ``decimal.Inexact``) in the caller's context."""
    from datetime import timedelta

    from kling_cost import BudgetExceeded
    from kling_cost.guard._core import GuardCore

    core = GuardCore(
        ledger, catalog=PRICEY, scopes=[], ttl=timedelta(minutes=5), cache=False, max_per_request="1234.569"
    )
    req = core.prepare("text2video", {"prompt": "a fox", "duration": "10"})
    with pytest.raises(BudgetExceeded, match=r"1234\.57 credits exceeds .* 1234\.569 credits"):
        core.check_max(req)
    plan = plan_batch([{"kind": "text2video", "duration": 10}], catalog=PRICEY)
    assert plan.to_dict()["usd"] == "16.913609"
