"""A real headless Chromium opens the dashboard and reads the ledger's numbers off the page."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost.ledger import Ledger, open_ledger
from kling_cost.money import format_amount
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock, services_required
from tests.reports.seeds import seed_glance, seed_mixed
from tests.web.conftest import (
    HOSTILE_NAME,
    HOSTILE_PACK,
    HOSTILE_SCOPE,
    add_hostile_key,
    seed_bill,
    seed_keys,
)

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


@contextmanager
def dashboard_page(serve: Callable[[Any], Any], app: Any, height: int) -> Iterator[tuple[Any, list[str]]]:
    """The dashboard of ``app`` rendered in headless Chromium (a page ``height`` pixels tall),
    and the page errors and dialogs it raised (a hostile name must raise none)."""
    from playwright.sync_api import sync_playwright

    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            failures: list[str] = []
            page.on("pageerror", lambda exc: failures.append(str(exc)))
            page.on("dialog", lambda d: failures.append("dialog " + d.message))
            page.goto(f"{base}/")
            page.wait_for_function("document.body.dataset.rendered !== '0'", timeout=20_000)
            yield page, failures
        finally:
            browser.close()


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
                assert "140 credits" in by_key and "6 units" in by_key and ".000" not in by_key
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


# Where an element's box leaves its chart (cut off) or overlaps the legend, as [label, why].
CLIPPED_JS = """
([chartSel, textSel]) => {
  const out = [];
  for (const chart of document.querySelectorAll(chartSel)) {
    const box = chart.getBoundingClientRect();
    const legend = chart.querySelector(".legend");
    const lbox = legend ? legend.getBoundingClientRect() : null;
    for (const t of chart.querySelectorAll(textSel)) {
      const r = t.getBoundingClientRect();
      if (r.width === 0) { continue; }
      if (r.left < box.left || r.right > box.right || r.top < box.top || r.bottom > box.bottom) {
        out.push([t.textContent, "outside its chart"]);
      }
      if (lbox && r.left < lbox.right && r.right > lbox.left && r.top < lbox.bottom && r.bottom > lbox.top) {
        out.push([t.textContent, "under the legend"]);
      }
    }
  }
  return out;
}
"""
TRAILING_ZEROS = re.compile(r"\d\.\d*0(?!\d)")  # 20.000, 2.50: amounts are shown 20, 2.5


def test_dashboard_at_a_glance_1400x1000(tmp_path: Path, serve: Callable[[Any], Any]) -> None:
    """What a person sees at 1400x1000: today against yesterday, the costliest prompts and the
    budget closest to its limit, every amount with its unit and without trailing zeros; no label
    cut off, "no data" on an empty chart, no 404 (favicon included)."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    clock = FakeClock()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'glance.db'}", clock=clock)
    seed_glance(ledger, clock)
    app = create_dashboard_app(ledger, refresh_seconds=600)
    try:
        with serve(app) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                failures: list[str] = []
                page.on("pageerror", lambda exc: failures.append(str(exc)))
                page.on(
                    "response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None
                )
                page.goto(f"{base}/")
                page.wait_for_function("document.body.dataset.rendered !== '0'", timeout=20_000)
                icon = page.request.get(f"{base}/favicon.ico")
                assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"
                assert failures == [] and page.locator("#error").is_hidden()

                # At a glance: today against yesterday, in its unit.
                spend = page.locator("#spend .spend[data-unit='units']")
                assert spend.locator(".amount.today").inner_text() == "25"
                assert spend.locator(".amount.yesterday").inner_text() == "32.725"
                assert spend.locator(".big").inner_text() == "25 units"
                assert spend.locator(".change").inner_text() == "▼ -7.725 units (-23.6%)"
                # The budget closest to its limit: project:ads (5 of 6), not the first listed.
                closest = page.locator("#closest")
                assert closest.locator(".percent").inner_text() == "83.3%"
                assert "project:ads · day budget (2026-06-15)" in closest.inner_text()
                assert (
                    closest.locator(".detail").inner_text() == "5 used + 0 reserved of 6 units · 1 unit left"
                )
                # The five costliest prompts, with model and amount in its unit.
                rows = page.locator("#top-prompts tbody tr")
                assert [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())] == [
                    ["a red fox runs through snow", "kling-v2-1, kling-v1-6", "35 units", "2"],
                    ["dragon over the mountains", "kling-v2-6", "20 units", "1"],
                    ["city at night, rain", "kling-v2-1", "12.5 units", "1"],
                    ["product shot of a shoe", "kling-v1-6", "10 units", "4"],
                    ["logo sketch", "kling-v1", "0.125 units", "1"],
                ]
                assert page.locator("#top-prompts-empty").is_hidden()

                # Amounts for people: exact, no trailing zeros, each with its unit.
                for u in ledger.usages():
                    row = page.locator(f"tr[data-testid='budget-{u.scope}-{u.budget.window}']")
                    assert row.locator(".unit").inner_text() == "units"
                    assert row.locator(".used").inner_text() == format_amount(u.used)
                    assert Decimal(row.locator(".used").inner_text()) == u.used
                account = page.locator("tr[data-testid='budget-account-day']")
                assert account.locator("td").all_inner_texts()[3:] == ["units", "40", "25", "5", "10", "75%"]
                totals = page.locator("#totals .totals[data-unit='units']")
                charged = sum(c.actual for c in ledger.charges())
                assert charged == Decimal("77.725")
                assert totals.locator(".value:has(.actual)").inner_text() == "77.725 units"
                assert totals.locator(".value:has(.refunded)").inner_text() == "15 units"
                gauges = page.locator("#gauges .gauge")
                assert gauges.count() == 3
                assert "25 units" in (page.text_content("#gauge-0") or "")
                assert "reserved 5 units, remaining 10 units" in (page.text_content("#gauge-0") or "")
                assert page.locator("#charges td.unit").all_inner_texts() == ["units"] * len(ledger.charges())
                assert "12.5" in page.locator("#charges td.actual").all_inner_texts()
                assert "0.125" in page.locator("#charges td.actual").all_inner_texts()
                assert "2.5 + 2.5 / 6 units" in page.locator("#alerts td.level").all_inner_texts()
                assert page.locator("#daily .ytitle").all_text_contents() == ["units"]
                assert "daily limit 40 units" in (page.text_content("#daily .legend") or "")
                by_model = page.text_content("#by-model") or ""
                assert "32.5 units" in by_model and "0.225 units" in by_model
                visible = page.inner_text("body")
                assert TRAILING_ZEROS.findall(visible) == [], TRAILING_ZEROS.findall(visible)

                # Nothing cut off: the gauges' end labels ("100%") and the year under the first date.
                assert page.locator("#gauges text", has_text="100%").count() == 3
                assert page.evaluate(CLIPPED_JS, ["#gauges .gauge", "text"]) == []
                assert page.locator("#daily .xtick text", has_text="2026").count() == 1
                assert page.evaluate(CLIPPED_JS, ["#daily", ".xtick text, .ytick text"]) == []
                assert page.evaluate(CLIPPED_JS, [".grid .chart", "text.bartext"]) == []
                # An empty chart says so, without axes.
                by_key = page.locator("#by-key")
                assert by_key.get_attribute("data-empty") == "1"
                assert (by_key.text_content() or "").strip() == "no data in the last 30 days"
                assert by_key.locator(".xtick, .ytick").count() == 0
                assert page.locator("#by-model").get_attribute("data-empty") == "0"

                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard-1400x1000.png"))
                page.screenshot(path=str(ARTIFACTS / "dashboard-1400x1000-full.png"), full_page=True)
            finally:
                browser.close()
    finally:
        ledger.close()


def test_dashboard_keys_table(tmp_path: Path, serve: Callable[[Any], Any]) -> None:
    """The keys view in a real browser: each key's state, scopes, spend (all time and this
    window), what each budget has left with its window and time zone, the least left among
    every budget it reserves on, open tasks and last use; a hostile name shown as text."""
    need_chromium()

    clock = FakeClock()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'keys.db'}", clock=clock)
    seed_keys(ledger, clock)
    add_hostile_key(ledger)
    app = create_dashboard_app(ledger, refresh_seconds=600, now=clock)
    try:
        with dashboard_page(serve, app, 2600) as (page, failures):
            assert failures == [] and page.locator("#error").is_hidden()
            assert page.locator("#keys-empty").is_hidden()
            rows = page.locator("#keys tbody tr")
            assert rows.count() == 4

            alice = page.locator("#keys tr[data-testid='key-alice']")
            assert alice.locator("td").all_inner_texts()[:3] == [
                "alice",
                "active",
                "key:alice, project:film",
            ]
            assert alice.locator(".spend").inner_text() == "19.5 units"
            spent = alice.locator(".window-spend .line")
            assert spent.all_inner_texts() == ["day: 12.5 units", "month: 19.5 units"]
            day = alice.locator(".left .line[data-window='day']")
            assert day.inner_text() == "32.5 of 50 units\nday 2026-06-15, Europe/Paris"
            assert Decimal(day.locator(".amount").inner_text()) == ledger.usage("key:alice", "day").remaining
            month = alice.locator(".left .line[data-window='month']")
            assert month.inner_text() == "175.5 of 200 units\nmonth 2026-06, UTC"
            assert alice.locator(".headroom").inner_text() == "22.5 units\nproject:film day 2026-06-15, UTC"
            assert alice.locator(".open").inner_text() == "1 / 3"
            assert alice.locator(".used").inner_text() == "2026-06-15 09:00:00"

            bob = page.locator("#keys tr[data-testid='key-bob']")
            assert bob.get_attribute("data-state") == "revoked"
            assert bob.locator(".state").inner_text() == "revoked"
            assert bob.locator(".spend").inner_text() == "20 units"
            assert bob.locator(".left").inner_text() == "10 of 30 units\nlifetime"
            assert (bob.locator(".open").inner_text(), bob.locator(".used").inner_text()) == (
                "0",
                "never",
            )

            carol = page.locator("#keys tr[data-testid='key-carol']")
            assert carol.locator(".state").inner_text() == "expired"
            assert carol.locator(".spend").inner_text() == "0 units"
            assert carol.locator(".left").inner_text() == "no budget of its own"
            assert carol.locator(".headroom").inner_text() == "no limit"
            assert bob.locator(".headroom").inner_text() == "10 units\nkey:bob lifetime"

            # The hostile row: its name and scope are text, nothing of them ran or was parsed.
            hostile = rows.nth(0)  # "<" sorts before letters
            assert hostile.locator(".name").inner_text() == HOSTILE_NAME
            assert HOSTILE_SCOPE in hostile.locator(".scopes").inner_text()
            assert page.locator("#keys img, #keys script, #keys b").count() == 0
            assert page.evaluate("document.body.dataset.pwned") is None
            assert page.locator("#keys tbody td").count() == 4 * 9  # no cell was closed early
            visible = page.inner_text("#keys")
            assert TRAILING_ZEROS.findall(visible) == [], TRAILING_ZEROS.findall(visible)
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#keys").screenshot(path=str(ARTIFACTS / "dashboard-keys.png"))
    finally:
        ledger.close()


PROJECTION_JS = """
() => document.getElementById("daily").data
  .filter((t) => t.meta === "projection" || (t.name || "").startsWith("daily limit"))
  .map((t) => ({ name: t.name, dash: t.line.dash, x: t.x, y: t.y, meta: t.meta || null }))
"""


def test_dashboard_bill_views(tmp_path: Path, serve: Callable[[Any], Any]) -> None:
    """The bill in a real browser: the day budget's projection dashed on the daily chart from
    now to midnight through the limit, the packs on a timeline with the units at risk and a
    line at now, the last reconciliation's counts and differences; a hostile pack name and
    key name shown as text."""
    need_chromium()

    clock = FakeClock()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'bill.db'}", clock=clock)
    seed_bill(ledger, clock, hostile=True)
    app = create_dashboard_app(ledger, refresh_seconds=600, now=clock)
    try:
        with dashboard_page(serve, app, 3600) as (page, failures):
            assert failures == [] and page.locator("#error").is_hidden()

            # The daily chart: the limit (dotted) and the projection (dashed), 60 now, the
            # limit at 20:00, 120 at midnight.
            limit, projection = page.evaluate(PROJECTION_JS)
            assert (limit["name"], limit["dash"], limit["y"]) == (
                "daily limit 100 units",
                "dot",
                [100] * 2,
            )
            assert projection == {
                "name": "projected 120 units by 2026-06-16 00:00",
                "dash": "dash",
                "x": ["2026-06-15T12:00:00", "2026-06-15T20:00:00", "2026-06-16T00:00:00"],
                "y": [60, 100, 120],
                "meta": "projection",
            }
            assert "projected 120 units" in (page.text_content("#daily .legend") or "")
            day = page.locator("#forecast tr[data-testid='forecast-account-day']")
            assert day.locator("td").all_inner_texts() == [
                "account",
                "day 2026-06-15",
                "units",
                "100",
                "60",
                "5",
                "120",
                "2026-06-15 20:00",
                "over the limit by the end",
            ]
            assert day.get_attribute("class") == "over"

            # The packs: a bar per pack, soonest expiry first, the units at risk on the bars.
            chart = page.locator("#packs-chart")
            assert chart.get_attribute("data-empty") == "0"
            assert page.locator("#packs-chart .bars path").count() == 4
            bars = page.locator("#packs-chart text.bartext").all_text_contents()
            assert "20 units at risk" in bars and "50 units at risk" in bars and "30 units at risk" in bars
            assert "7 units lost" in bars
            ticks = page.locator("#packs-chart .ytick text").all_text_contents()
            assert ticks == [
                "image old · image",
                "video A · video",
                HOSTILE_PACK + " · image",  # the same text: plotly parsed none of it ("img": image)
                "video B · video",
            ]
            assert page.locator("#packs-chart .shapelayer path").count() == 1  # the line at now
            rows = page.locator("#packs tbody tr")
            assert rows.count() == 4
            a = page.locator("#packs tr[data-testid='pack-id-video A']")
            assert a.locator("td").all_inner_texts() == [
                "video A",
                "video",
                "online",
                "50 of 1000 units",
                "2026-05-16 12:00 → 2026-06-18 12:00",
                "3",
                "20",
                "$7",
            ]
            assert rows.nth(2).locator(".name").inner_text() == HOSTILE_PACK
            assert "12 h" in page.inner_text("#packs-note")
            assert page.locator("#packs-empty").is_hidden()

            # The reconciliation: the counts and the three differences in order.
            summary = page.inner_text("#recon-summary")
            assert "differs from Kling's bill" in summary
            assert "period 2026-06-08 12:00:00 → 2026-06-15 12:00:00 UTC" in summary
            assert page.locator("#recon-summary .count[data-category='unknown_to_ledger']").inner_text() == (
                "1 charged by Kling, unknown to the ledger"
            )
            assert "video: ledger 90 units, Kling 120 units" in summary
            diffs = page.locator("#recon-diffs tbody tr")
            assert [diffs.nth(i).get_attribute("data-category") for i in range(diffs.count())] == [
                "unknown_to_ledger",
                "amount_differs",
                "not_billed",
            ]
            assert diffs.nth(1).locator("td").all_inner_texts()[:5] == [
                "amount differs",
                "task-4",
                "video",
                "15",
                "20",
            ]
            assert diffs.nth(0).locator(".key").inner_text() == HOSTILE_PACK
            assert page.locator("#recon-empty").is_hidden()

            # Nothing hostile ran or was parsed, anywhere.
            assert page.evaluate("document.body.dataset.pwned") is None
            for where in ("#packs", "#packs-chart", "#recon-diffs"):
                assert page.locator(f"{where} img, {where} script, {where} b").count() == 0, where
            visible = page.inner_text("body")
            assert TRAILING_ZEROS.findall(visible) == [], TRAILING_ZEROS.findall(visible)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-bill.png"), full_page=True)
    finally:
        ledger.close()


def test_dashboard_bill_views_before_any_run(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]
) -> None:
    """No packs snapshot and no reconciliation yet: each section says which command fills it."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    ledger, _ = known
    with serve(create_dashboard_app(ledger, refresh_seconds=600)) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.goto(f"{base}/")
            page.wait_for_function("document.body.dataset.rendered !== '0'", timeout=20_000)
            assert page.locator("#error").is_hidden()
            assert page.locator("#packs-chart").get_attribute("data-empty") == "1"
            assert "kling-cost packs" in page.inner_text("#packs-empty")
            assert page.locator("#packs").is_hidden() and page.locator("#recon-diffs").is_hidden()
            assert page.inner_text("#recon-empty") == "no reconciliation yet: kling-cost reconcile"
            assert page.locator("#forecast tbody tr").count() == 3
        finally:
            browser.close()
