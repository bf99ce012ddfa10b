"""Item 9 of issue 11: an overage is never silent. A charge records how far it took a budget
window past its limit, an ``overage`` alert fires once per budget window, and reports and
exports show it."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal

from typer.testing import CliRunner

from kling_cost.alerts.message import build_message
from kling_cost.cli import app
from kling_cost.ledger import Ledger
from kling_cost.reports import export_charges, report
from tests.helpers import FakeClock


def _overage_alerts(ledger: Ledger, scope: str | None = None) -> list:  # type: ignore[type-arg]
    return [a for a in ledger.alerts(scope=scope) if a.kind == "overage"]


def test_committing_35_on_a_20_reservation_is_an_overage(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 20)
    res = ledger.reserve(20, ["project:film"])
    ledger.commit(res, 35, task_id="t1")
    usage = ledger.usage("project:film")
    assert (usage.used, usage.remaining) == (35, 0)
    [charge] = ledger.charges()
    assert (charge.estimate, charge.actual, charge.overage) == (20, 35, 15)
    assert charge.to_dict()["overage"] == "15.000"
    [alert] = _overage_alerts(ledger)
    assert (alert.scope, alert.threshold, alert.used, alert.limit) == ("project:film", "overage", 35, 20)
    assert alert.details["overage"] == "15.000" and alert.details["task_id"] == "t1"
    assert "went over its limit" in alert.message and "15 units past the limit" in alert.message
    message = build_message(alert, "alert")
    assert message.title == "project:film day budget: over its limit by 15 units (35 / 20 units)"
    assert any(line.startswith("Overage:    15 units past the limit") for line in message.lines())


def test_one_overage_alert_per_budget_window(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("project:film", 20)
    ledger.commit(ledger.reserve(20, ["project:film"]), 35)
    ledger.charge(5, ["project:film"], task_id="late")  # further past the limit, same window
    assert [c.overage for c in ledger.charges()] == [15, 5]
    [first] = _overage_alerts(ledger)
    assert first.used == 35  # the alert of the first overage, not rewritten by the second
    clock.advance(days=1)  # a new window: its first overage alerts again
    ledger.commit(ledger.reserve(20, ["project:film"]), 21)
    alerts = _overage_alerts(ledger)
    assert [a.window_key for a in alerts] == ["2026-06-16", "2026-06-15"]
    assert alerts[0].cleared_at is None and alerts[1].cleared_at is not None


def test_within_the_limit_an_actual_above_the_estimate_is_no_overage(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 100)
    ledger.set_budget("account", 30)
    ledger.commit(ledger.reserve(20, ["project:film"]), 35)  # the account went 5 over, not the project
    [charge] = ledger.charges()
    assert charge.overage == 5
    assert [a.scope for a in _overage_alerts(ledger)] == ["account"]
    ledger.set_budget("account", 1000)
    ledger.commit(ledger.reserve(20, ["project:film"]), 25)
    assert ledger.charges()[-1].overage == 0 and len(_overage_alerts(ledger)) == 1


def test_the_overage_counts_only_what_this_charge_added(ledger: Ledger, clock: FakeClock) -> None:
    ledger.set_budget("account", 20)
    late = ledger.reserve(3, [], ttl=timedelta(minutes=1))
    ledger.commit(ledger.reserve(15, []), 15)
    ledger.commit(ledger.reserve(2, []), 7)  # 20 -> 25: five past the limit
    clock.advance(minutes=2)
    ledger.sweep()  # 22
    ledger.commit(late, 3, force=True)  # an expired hold charged anyway: 22 -> 25, all of it past
    ledger.set_budget("account", 10)  # a lowered limit alone is no overage of any charge
    ledger.commit(ledger.reserve_unchecked(1, []), 1)  # held, then spent: no rise at the commit
    assert [c.overage for c in ledger.charges()] == [0, 5, 3, 0]


def test_a_raised_limit_clears_the_overage_alert(ledger: Ledger) -> None:
    ledger.set_budget("project:film", 20)
    ledger.commit(ledger.reserve(20, ["project:film"]), 35)
    ledger.set_budget("project:film", 30)  # still over: the alert stands
    assert _overage_alerts(ledger)[0].cleared_at is None
    ledger.set_budget("project:film", 40)
    assert _overage_alerts(ledger)[0].cleared_at is not None


def test_reports_and_exports_show_the_overage(ledger: Ledger, ledger_url: str) -> None:
    ledger.set_budget("project:film", 20)
    ledger.commit(ledger.reserve(10, ["project:film"], metadata={"model": "m"}), 10, task_id="ok")
    ledger.commit(ledger.reserve(10, ["project:film"], metadata={"model": "m"}), 25, task_id="over")
    for source in ("rollup", "charges"):
        rep = report(ledger, "model", since=None, source=source, scope="project:film")
        assert rep.overage == {"units": 15} and [c.task_id for c in rep.overages] == ["over"]
        data = rep.to_dict()
        assert data["overage"] == {"units": "15.000"} and data["overages"][0]["overage"] == "15.000"
    assert report(ledger, "day", since=None, scope="project:other").overages == ()
    out = io.StringIO()
    export_charges(ledger, out)
    assert [json.loads(line, parse_float=Decimal)["overage"] for line in out.getvalue().splitlines()] == [
        0,
        15,
    ]
    csv_out = io.StringIO()
    export_charges(ledger, csv_out, "csv")
    header, *rows = csv_out.getvalue().splitlines()
    assert header.endswith(",overage") and rows[1].endswith(",15")
    table = CliRunner().invoke(app, ["report", "--since", "2026-06-01", "--ledger", ledger_url])
    assert table.exit_code == 0, table.stderr
    assert "Over the limit: 1 charge took a budget past its limit, 15 units over in total" in table.stdout
    assert (
        "task over (project:film): charged 25 units on an estimate of 10, 15 units over the limit"
        in table.stdout
    )
    as_json = CliRunner().invoke(
        app, ["report", "--since", "2026-06-01", "--format", "json", "--ledger", ledger_url]
    )
    assert json.loads(as_json.stdout)["overage"] == {"units": "15.000"}


def test_late_overages_in_an_ended_window_alert_once(ledger: Ledger, clock: FakeClock) -> None:
    """Before: two tasks reserved before midnight and charged above their estimates after it
    fired two overage alerts for the same (ended) day: the first was cleared when the new day
    began, and the second overage re-armed it."""
    clock.set(clock().replace(hour=23, minute=58))
    ledger.set_budget("account", 10)
    first = ledger.reserve(5, ttl=timedelta(hours=1))
    second = ledger.reserve(5, ttl=timedelta(hours=1))
    clock.advance(minutes=3)  # the next day
    ledger.commit(first, 8, task_id="t1")
    [alert] = _overage_alerts(ledger)
    assert (alert.window_key, alert.details["task_id"], alert.details.get("window_ended")) == (
        "2026-06-15",
        "t1",
        True,
    )
    ledger.reserve(1)  # the new day's first reservation clears the ended day's alerts
    [cleared] = _overage_alerts(ledger)
    assert cleared.cleared_at is not None
    ledger.commit(second, 9, task_id="t2")  # another overage in the ended day
    assert [c.overage for c in ledger.charges()] == [3, 4]
    [after] = _overage_alerts(ledger)
    assert (after.id, after.cleared_at, after.details["task_id"]) == (alert.id, cleared.cleared_at, "t1")
    assert (after.created_at, after.used) == (alert.created_at, alert.used)
