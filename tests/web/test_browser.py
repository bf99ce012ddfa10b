"""A real headless Chromium opens the dashboard and reads the ledger's numbers off the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.ledger import Ledger, open_ledger
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock, services_required
from tests.reports.seeds import seed_mixed

CHROMIUM = os.environ.get("KLING_COST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_chromium() -> None:
    if Path(CHROMIUM).is_file() or shutil.which(CHROMIUM):
        return
    message = (
        f"Chromium not found at {CHROMIUM}; install the Debian package (apt-get install -y chromium) "
        "or set KLING_COST_CHROMIUM to enable the browser tests"
    )
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


def test_dashboard_in_headless_chromium(known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]) -> None:
    need_chromium()
    from playwright.sync_api import sync_playwright

    ledger, _ = known
    app = create_dashboard_app(ledger, token="tok", bound_host="192.0.2.10", refresh_seconds=60)
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/?token=tok")
            page.wait_for_function("document.body.dataset.rendered !== '0'", timeout=20_000)
            assert not errors
            assert page.locator("#error").is_hidden()
            # every chart was drawn by plotly.js, served from the installed package
            assert page.locator("#gauges .js-plotly-plot").count() == 3
            for chart in ("daily", "by-model", "by-mode", "by-project", "by-key", "drift"):
                assert page.locator(f"#{chart} .main-svg").count() >= 1, chart
            assert page.locator("#daily .bars path").count() >= 2
            for u in ledger.usages():
                row = page.locator(f"tr[data-testid='budget-{u.scope}-{u.budget.window}']")
                assert Decimal(row.locator(".used").inner_text()) == u.used
                assert Decimal(row.locator(".reserved").inner_text()) == u.reserved
                assert Decimal(row.locator(".remaining").inner_text()) == u.remaining
                assert Decimal(row.locator(".limit").inner_text()) == u.limit
                assert row.locator(".unit").inner_text() == u.unit == "units"
            charges = ledger.charges()
            (totals,) = page.locator("#totals .totals").all()  # one unit: one line of totals
            assert totals.get_attribute("data-unit") == "units"
            assert Decimal(totals.locator(".amount.actual").inner_text()) == sum(c.actual for c in charges)
            assert totals.locator(".value:has(.actual)").inner_text().endswith(" units")
            assert int(totals.locator(".amount.charges").inner_text()) == len(charges)
            assert Decimal(totals.locator(".amount.saved").inner_text()) == sum(c.saved for c in charges)
            assert page.locator("#charges tbody tr").count() == len(charges)
            assert page.locator("#charges td.unit").all_inner_texts() == ["units"] * len(charges)
            assert page.locator("#daily .ytitle").all_text_contents() == ["units"]  # the value axis
            assert "task-failed" in page.inner_text("#charges")
            assert "reached 80% of its limit" in page.inner_text("#alerts")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()


def test_dashboard_shows_each_unit_apart(tmp_path: Path, serve: Callable[[Any], Any]) -> None:
    """Units and credits in one ledger: each amount shows its unit, each unit has its own
    totals, axes and series; nothing on the page adds 6 units to 140 credits."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    clock = FakeClock()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'mixed.db'}", clock=clock)
    seed_mixed(ledger, clock)
    app = create_dashboard_app(ledger, refresh_seconds=60)
    try:
        with serve(app) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2600})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{base}/")
                page.wait_for_function("document.body.dataset.rendered !== '0'", timeout=20_000)
                assert not errors and page.locator("#error").is_hidden()
                lines = page.locator("#totals .totals")
                assert [lines.nth(i).get_attribute("data-unit") for i in range(lines.count())] == [
                    "units",
                    "credits",
                ]
                for unit, actual, refunded in (("units", "6", "0"), ("credits", "140", "25")):
                    line = page.locator(f"#totals .totals[data-unit='{unit}']")
                    assert Decimal(line.locator(".amount.actual").inner_text()) == Decimal(actual)
                    assert Decimal(line.locator(".amount.refunded").inner_text()) == Decimal(refunded)
                    for value in line.locator(".value:has(.amount):not(:has(.charges))").all():
                        assert value.inner_text().endswith(" " + unit)
                for u in ledger.usages():
                    row = page.locator(f"tr[data-testid='budget-{u.scope}-{u.budget.window}']")
                    assert row.locator(".unit").inner_text() == u.unit
                    assert Decimal(row.locator(".used").inner_text()) == u.used
                gauges = page.text_content("#gauges") or ""
                assert "project:film · day · credits" in gauges and "project:api · day · units" in gauges
                assert "70 credits" in gauges and "3 units" in gauges
                # Daily usage: one axis per unit, one series per unit.
                assert sorted(page.locator("#daily .ytitle, #daily .y2title").all_text_contents()) == [
                    "credits",
                    "units",
                ]
                legend = page.text_content("#daily .legend") or ""
                assert "charged (units)" in legend and "charged (credits)" in legend
                by_key = page.text_content("#by-key") or ""
                assert "140.000 credits" in by_key and "6.000 units" in by_key
                drift = page.inner_text("#drift-table")
                assert "credits" in drift and "units" in drift
                units = page.locator("#charges td.unit").all_inner_texts()
                assert sorted(units) == ["credits"] * 3 + ["units"] * 3
                assert "credits" in page.inner_text("#alerts .level")
                assert "146" not in page.inner_text("body")  # 140 credits + 6 units, never shown
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-units.png"), full_page=True)
            finally:
                browser.close()
    finally:
        ledger.close()
