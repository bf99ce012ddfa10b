"""``kling-cost forecast``: where every budget is heading, and its alerts."""

from __future__ import annotations

from typing import Annotated

import typer

from ..money import format_amount, format_quantity
from ._common import JsonOption, LedgerOption, boundary, console, print_json
from .budget import opened


def forecast_command(
    alert: Annotated[
        bool,
        typer.Option(
            "--alert",
            help="Also write the alerts due (forecast over the limit, packs expiring with units at "
            "risk) into the outbox; `kling-cost alerts deliver` sends them.",
        ),
    ] = False,
    days: Annotated[
        int,
        typer.Option(
            "--days", min=0, max=3660, help="With --alert: warn this many days before a pack expires."
        ),
    ] = 7,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Project every budget to the end of its window at the recent burn rate: limit, used,
    reserved, rate per hour, projected use and when it runs out ("not enough data yet" until
    3 charges and 10% of the window)."""
    from ..bill.forecast import forecast, forecast_alerts, pack_expiry_alerts, stored_packs

    with opened(ledger_url, create=False) as ledger, boundary():
        now = ledger.clock()
        projections = forecast(ledger, now)
        written = []
        if alert:
            written = forecast_alerts(ledger, projections)
            packs = stored_packs(ledger)
            if packs:
                written += pack_expiry_alerts(ledger, packs, now, days)
    if json_out:
        print_json(
            {
                "at": now.isoformat(),
                "budgets": [p.to_dict() for p in projections],
                "alerts": [a.to_dict() for a in written],
            }
        )
        return
    if not projections:
        console.print("no budgets; set one with `kling-cost budget set SCOPE LIMIT`")
        return
    from rich.table import Table

    table = Table(title=f"Forecast at {now.strftime('%Y-%m-%d %H:%M')} UTC")
    for col in ("scope", "window", "limit", "used", "reserved", "per hour", "projected", "runs out at"):
        table.add_column(col, overflow="fold")
    for p in projections:
        unit = p.budget.unit
        if p.projected is None:
            rate = projected = "-"
            out = p.reason or "not enough data yet"
        else:
            rate = "-" if p.rate_per_hour is None else format_amount(p.rate_per_hour)
            projected = format_amount(p.projected) + (" (over)" if p.over else "")
            out = "-" if p.runs_out_at is None else p.runs_out_at.strftime("%Y-%m-%d %H:%M UTC")
        table.add_row(
            p.budget.scope,
            f"{p.budget.window} {p.window.key}",
            format_quantity(p.limit, unit),
            format_amount(p.used),
            format_amount(p.reserved),
            rate,
            projected,
            out,
        )
    console.print(table)
    if alert:
        console.print(f"wrote {len(written)} alert(s)")
        for a in written:
            console.print(f"  {a.message}", markup=False)
