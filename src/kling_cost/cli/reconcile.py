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

    def say(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)

    period = f"{result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC"
    source = "Kling's billing" if result.source == "billing" else "Kling's task queries"
    say(f"reconcile {period} against {source} (tolerance {format_amount(result.tolerance)} units)")
    if result.note:
        say(f"note: {result.note}")
    say(", ".join(f"{name} {count}" for name, count in result.counts.items()))
    category = None
    for diff in result.differences:
        if diff.category != category:
            category = diff.category
            say(f"{_TITLES.get(category, category)}:")
        who = f" key {diff.api_key_name}" if diff.api_key_name else ""
        say(
            f"  {diff.task_id or '-'}  {diff.pack_type or '-'}  ledger {_amount(diff.ledger_amount)}  "
            f"kling {_amount(diff.kling_amount)}  {diff.day or '-'}{who}  model {diff.model or '-'}"
        )
    if result.by_pack:
        table = Table(title="units per pack type")
        for column in ("pack", "ledger", "kling"):
            table.add_column(column, justify="left" if column == "pack" else "right")
        for pack, sides in result.by_pack.items():
            table.add_row(pack, format_amount(sides["ledger"]), format_amount(sides["kling"]))
        console.print(table)
    if result.by_day:
        table = Table(title="units per day")
        for column in ("day", "pack", "ledger", "kling"):
            table.add_column(column, justify="left" if column in ("day", "pack") else "right")
        for day, packs in result.by_day.items():
            for pack, sides in packs.items():
                table.add_row(day, pack, format_amount(sides["ledger"]), format_amount(sides["kling"]))
        console.print(table)
    if result.cash:
        paid = ", ".join(f"{format_amount(v)} {k or '(no currency)'}" for k, v in result.cash.items())
        say(f"paid from the balance: {paid} (matched by task, amounts not compared)")
    if result.fixed:
        say(f"fixed: recorded {len(result.fixed)} late charge(s): {', '.join(result.fixed)}")
    for line in result.problems:
        say(f"problem: {line}")
    say("clean: the ledger agrees with Kling's bill" if result.clean else "differences found")
