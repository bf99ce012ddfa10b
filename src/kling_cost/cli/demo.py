"""``kling-cost demo``: see the whole tool work in under 30 seconds, on a simulated Kling."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from ._common import JsonOption, boundary, console, print_json


def next_commands(ledger_url: str) -> list[str]:
    """What to try on the demo's ledger next: the report, the dashboard, the alerts."""
    ledger = shlex.quote(ledger_url)
    return [
        f"kling-cost report --ledger {ledger}",
        f"kling-cost serve --ledger {ledger}",
        f"kling-cost alerts list --ledger {ledger}",
    ]


def demo_command(
    ledger_url: Annotated[
        str | None,
        typer.Option(
            "--ledger",
            help="Ledger URL. Default: the demo's own file, demo.db in the user data directory "
            "(replaced by each demo, kept afterwards; never the default ledger).",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[str, typer.Option("--budget", help="Daily budget of project:demo, in units.")] = "12",
    json_out: JsonOption = False,
) -> None:
    """Run a batch against a simulated Kling with a small budget: estimate, reserve, refuse,
    refund a failed task, serve a duplicate from the cache, and report. Its ledger is kept:
    it ends with the commands that show it (report, dashboard, alerts)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from ..batch import BatchResult
    from ..batch.plan import plural
    from ..demo import demo_ledger_url, run_demo
    from ..ledger import open_ledger
    from ..money import format_amount, parse_amount
    from .budget import _usage_table

    with boundary():
        limit = parse_amount(budget, what="--budget")
        url = ledger_url or demo_ledger_url(fresh=True)
        ledger = open_ledger(url)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                disable=json_out,
            ) as progress:
                bar = progress.add_task("batch", total=None)

                def planned(plan: Any) -> None:
                    if not json_out:
                        progress.console.print(
                            f"planned {plural(len(plan.items), 'clip')} = {format_amount(plan.total)} units "
                            f"against a daily budget of {format_amount(limit)} units",
                            markup=False,
                        )
                    progress.update(bar, total=len(plan.items))

                def advance(result: BatchResult) -> None:
                    progress.update(bar, advance=1, description=f"line {result.line:>2}: {result.status}")

                def alert(text: str) -> None:
                    if not json_out:
                        progress.console.print(f"ALERT: {text}", markup=False, soft_wrap=True)

                result = run_demo(ledger, budget=limit, on_result=advance, on_plan=planned, on_alert=alert)
                progress.update(bar, description="finished")
            usages = ledger.usages()
            charges = ledger.charges()
        finally:
            ledger.close()
    summary = result.summary.to_dict()
    commands = next_commands(url)
    if json_out:
        print_json(
            {
                "ledger": url,
                "summary": summary,
                "stopped": result.stop_reason,
                "alerts": result.alerts,
                "budgets": [u.to_dict() for u in usages],
                "charges": [c.to_dict() for c in charges],
                "next": commands,
            }
        )
        return
    if result.stop_reason:
        console.print(f"[yellow]the budget refused: {result.stop_reason}[/yellow]")
    console.print(_usage_table(usages, "Budgets after the demo"))
    table = Table(title="Generations")
    for col in ("task", "status", "unit", "estimate", "charged", "saved", "prompt"):
        table.add_column(col, overflow="fold")
    for c in charges:
        table.add_row(
            c.task_id or "",
            c.status,
            c.unit,
            format_amount(c.estimate),
            format_amount(c.actual),
            format_amount(c.saved),
            (c.prompt_preview or "")[:40],
        )
    console.print(table)
    console.print(
        f"done {summary['done']}, failed and refunded {summary['failed']}, served from cache "
        f"{summary['cached']}, refused {summary['refused']}, skipped {summary['skipped']}; "
        f"spent {summary['spent']} units, saved {summary['saved']} units"
    )
    kept = "kept" if ledger_url else "kept (the next demo replaces it)"
    console.print(f"\nThe demo's ledger is {kept}: {url}\nTry next:", markup=False, soft_wrap=True)
    for command in commands:
        console.print(f"  {command}", markup=False, soft_wrap=True)
