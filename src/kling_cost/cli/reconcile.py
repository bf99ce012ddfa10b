"""``kling-cost reconcile``: the ledger against what Kling billed, task by task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..money import format_amount
from ._common import EXIT_ERROR, JsonOption, LedgerOption, boundary, console, print_json
from .budget import opened
from .generate import BaseUrlOption

if TYPE_CHECKING:  # imported where used: `kling-cost --help` must not load the HTTP client
    from ..bill.reconcile import Reconciliation

_TITLES = {
    "amount_differs": "amount differs",
    "unknown_to_ledger": "charged by Kling, unknown to the ledger",
    "not_billed": "in the ledger, not billed by Kling",
    "other_unit": "in credits (not comparable with Kling's units)",
}


def reconcile_command(
    since: Annotated[
        str, typer.Option("--since", help="7d (the last 7 days, today included), YYYY-MM-DD or an ISO time.")
    ] = "7d",
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="YYYY-MM-DD (that day included) or an ISO time (excluded). Default: now."
        ),
    ] = None,
    tolerance: Annotated[
        str, typer.Option("--tolerance", help="Largest difference per task, in units, still matched.")
    ] = "0.001",
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Record the tasks Kling charged and the ledger missed as late charges (and what "
            "Kling charged more), then reconcile again.",
        ),
    ] = False,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the days in the totals.")] = "UTC",
    base_url: BaseUrlOption = None,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Join the ledger's charges with Kling's per-task bill: matched, amount differs, unknown
    to the ledger (traffic around the guard or proxy), not billed; totals per pack type and
    per day. Needs KLING_API_KEY for the bill (else only the ledger's own tasks are asked).
    Exits 0 when both agree within the tolerance, 1 otherwise. Every run is kept in the ledger."""
    from ..bill.reconcile import reconcile
    from ..kling import KlingClient

    with opened(ledger_url) as ledger, boundary(), KlingClient(base_url=base_url) as client:
        result = reconcile(ledger, client, since=since, until=until, tolerance=tolerance, fix=fix, tz=tz)
    if json_out:
        print_json(result.to_dict())
    else:
        _print(result)
    if not result.clean:
        raise typer.Exit(EXIT_ERROR)


def _amount(value: object) -> str:
    from decimal import Decimal

    return "-" if not isinstance(value, Decimal) else format_amount(value)


def _print(result: Reconciliation) -> None:
    from rich.table import Table

    period = f"{result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC"
    source = "Kling's billing" if result.source == "billing" else "Kling's task queries"
    console.print(f"reconcile {period} against {source} (tolerance {format_amount(result.tolerance)} units)")
    if result.note:
        console.print(f"note: {result.note}", markup=False)
    console.print(", ".join(f"{name} {count}" for name, count in result.counts.items()))
    if result.differences:
        table = Table(title="differences")
        for column in ("category", "task", "pack", "ledger", "kling", "day", "api key", "model"):
            table.add_column(column, justify="right" if column in ("ledger", "kling") else "left")
        for diff in result.differences:
            table.add_row(
                _TITLES.get(diff.category, diff.category),
                diff.task_id or "-",
                diff.pack_type or "-",
                _amount(diff.ledger_amount),
                _amount(diff.kling_amount),
                diff.day or "-",
                diff.api_key_name or "-",
                diff.model or "-",
            )
        console.print(table)
    for title, rows in (("per pack type (units)", result.by_pack), ("per day (units)", result.by_day)):
        if not rows:
            continue
        table = Table(title=title)
        table.add_column("pack" if "pack" in title else "day")
        table.add_column("ledger", justify="right")
        table.add_column("kling", justify="right")
        for key, sides in rows.items():
            table.add_row(key, format_amount(sides["ledger"]), format_amount(sides["kling"]))
        console.print(table)
    if result.cash:
        paid = ", ".join(f"{format_amount(v)} {k or '(no currency)'}" for k, v in result.cash.items())
        console.print(f"paid from the balance: {paid} (matched by task, amounts not compared)")
    if result.fixed:
        console.print(f"fixed: recorded {len(result.fixed)} late charge(s): {', '.join(result.fixed)}")
    for line in result.problems:
        console.print(f"problem: {line}", markup=False)
    console.print("clean: the ledger agrees with Kling's bill" if result.clean else "differences found")
