"""A real headless Chromium opens the dashboard and reads the ledger's numbers off the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.ledger import Ledger
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock, services_required

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
            charges = ledger.charges()
            assert Decimal(page.inner_text("#total-actual")) == sum(c.actual for c in charges)
            assert int(page.inner_text("#total-charges")) == len(charges)
            assert Decimal(page.inner_text("#total-saved")) == sum(c.saved for c in charges)
            assert page.locator("#charges tbody tr").count() == len(charges)
            assert "task-failed" in page.inner_text("#charges")
            assert "reached 80% of its limit" in page.inner_text("#alerts")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
