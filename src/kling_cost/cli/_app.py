"""The ``kling-cost`` Typer application: the root group and the table of its commands.

Each command's module is imported, and the command built, only when it runs (or its help is
shown): ``kling-cost estimate`` never loads the HTTP client, the ledger or the dashboard. Add a
command to ``_Commands.lazy_commands`` as ``"name": "module:attribute"`` (a command function,
or a ``typer.Typer`` for a group of commands); the list of commands in ``--help`` follows it.
"""

from __future__ import annotations

from typing import ClassVar

from ._common import one_line_usage_errors
from ._typer import App, LazyGroup

__all__ = ["app"]

one_line_usage_errors()  # typer's click prints a four-line usage block; ours is one line


class _Commands(LazyGroup):
    lazy_package: ClassVar[str] = __package__ or "kling_cost.cli"
    lazy_commands: ClassVar[dict[str, str]] = {
        "estimate": "pricing:estimate_command",
        "usage": "budget:usage_command",
        "simulate": "simulate:simulate_command",
        "settle": "generate:settle_command",
        "advise": "generate:advise_command",
        "demo": "demo:demo_command",
        "report": "report:report_command",
        "export": "report:export_command",
        "serve": "report:serve_command",
        "pricing": "pricing:pricing_app",
        "budget": "budget:budget_app",
        "ledger": "budget:ledger_app",
        "batch": "generate:batch_app",
        "alerts": "alerts:alerts_app",
        "proxy": "proxy:proxy_command",
        "keys": "keys:keys_app",
        "forecast": "forecast:forecast_command",
        "reconcile": "reconcile:reconcile_command",
        "packs": "packs:packs_command",
    }


app = App(
    cls=_Commands,
    name="kling-cost",
    help="Cost estimates, hard budgets, alerts and usage tracking for the Kling AI API.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """Cost estimates, hard budgets, alerts and usage tracking for the Kling AI API."""
