"""``kling-cost demo``: see the whole tool work in under 30 seconds, on a simulated Kling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..money import format_amount, parse_amount
from ._common import JsonOption, boundary, console, print_json
from .budget import _usage_table

if TYPE_CHECKING:  # imported where used: `kling-cost --help` must not load the simulator
    from ..batch import BatchResult


def demo_command(
    ledger_url: Annotated[
        str | None, typer.Option("--ledger", help="Ledger URL (default: a fresh file in a temp dir).")
    ] = None,
    budget: Annotated[str, typer.Option("--budget", help="Daily budget of project:demo, in units.")] = "12",
    json_out: JsonOption = False,
) -> None:
    """Run a batch against a simulated Kling with a small budget: estimate, reserve, refuse,
    refund a failed task, serve a duplicate from the cache, and report."""
    import tempfile

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from ..demo import DEMO_PROMPTS, run_demo
    from ..ledger import open_ledger

    with tempfile.TemporaryDirectory(prefix="kling-cost-demo-") as tmp, boundary():
        url = ledger_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        limit = parse_amount(budget, what="--budget")
        ledger = open_ledger(url)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                disable=json_out,
            ) as progress:
                bar = progress.add_task("batch", total=len(DEMO_PROMPTS) + 1)

                def advance(result: BatchResult) -> None:
                    progress.update(bar, advance=1, description=f"line {result.line:>2}: {result.status}")

                result = run_demo(ledger, budget=limit, on_result=advance)
            usages = ledger.usages()
            charges = ledger.charges()
        finally:
            ledger.close()
    summary = result.summary.to_dict()
    if json_out:
        print_json(
            {
                "summary": summary,
                "stopped": result.stop_reason,
                "budgets": [u.to_dict() for u in usages],
                "charges": [c.to_dict() for c in charges],
            }
        )
        return
    console.print(
        f"planned {len(DEMO_PROMPTS)} clips = {format_amount(result.plan_total)} units "
        f"against a budget of {format_amount(limit)} units"
    )
    if result.stop_reason:
        console.print(f"[yellow]the budget refused: {result.stop_reason}[/yellow]")
    for text in result.alerts:
        console.print(f"ALERT: {text}", markup=False)
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
    console.print(
        "Explore further: kling-cost estimate --help | kling-cost budget set account 100 | "
        "kling-cost batch plan prompts.txt | kling-cost simulate"
    )
