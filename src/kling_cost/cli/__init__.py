"""The ``kling-cost`` command line: a thin layer over the library."""

from __future__ import annotations

import typer

from ._common import run_main
from .alerts import alerts_app
from .budget import budget_app, ledger_app, usage_command
from .demo import demo_command
from .generate import advise_command, batch_app, settle_command
from .pricing import estimate_command, pricing_app
from .report import export_command, report_command, serve_command
from .simulate import simulate_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="kling-cost",
    help="Cost estimates, hard budgets, alerts and usage tracking for the Kling AI API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("estimate")(estimate_command)
app.add_typer(pricing_app, name="pricing")
app.add_typer(budget_app, name="budget")
app.command("usage")(usage_command)
app.add_typer(ledger_app, name="ledger")
app.command("simulate")(simulate_command)
app.add_typer(batch_app, name="batch")
app.command("settle")(settle_command)
app.command("advise")(advise_command)
app.command("demo")(demo_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("serve")(serve_command)
app.add_typer(alerts_app, name="alerts")


def main() -> None:
    """Entry point of the ``kling-cost`` script."""
    run_main(app)
