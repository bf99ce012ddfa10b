"""``kling-cost alerts list|test|deliver``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from ..money import format_amount, format_quantity
from ._common import EXIT_ERROR, JsonOption, LedgerOption, boundary, console, fail, print_json
from ._typer import App
from .budget import opened

if TYPE_CHECKING:
    import threading

    from ..alerts import AlertsConfig, Deliverer

# alerts.config.ENV_CONFIG, spelt out so `kling-cost --help` need not import the alerts package
# (tests/test_cli_startup.py checks that the two agree)
ENV_CONFIG = "KLING_COST_CONFIG"

alerts_app = App(help="List, test and deliver budget alerts.", no_args_is_help=True)

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar=ENV_CONFIG,
        metavar="FILE",
        help="TOML file with an [alerts] table (sinks, dashboard_url, retries). Default: $KLING_COST_CONFIG.",
        show_default=False,
    ),
]
DashboardOption = Annotated[
    str | None,
    typer.Option(
        "--dashboard-url",
        metavar="URL",
        help="Link put in every message (overrides the config file).",
        show_default=False,
    ),
]


def _config(path: str | None, sinks: list[str] | None, dashboard: str | None) -> AlertsConfig:
    from ..alerts import load_config

    with boundary():
        config = load_config(path)
        if sinks:
            config = config.with_sinks(sinks)
        if dashboard:
            config = replace(config, dashboard_url=dashboard)
        return config


@alerts_app.command("list")
def list_command(
    pending: Annotated[bool, typer.Option("--pending", help="Only alerts not delivered yet.")] = False,
    scope: Annotated[str | None, typer.Option("--scope", help="Only this scope.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Hide cleared alerts.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 100,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List alerts from the outbox, newest first (delivery state, attempts, last error)."""
    from rich.table import Table

    from ..alerts.redact import public_alert, scrub_urls

    with opened(ledger_url, create=False) as ledger:
        alerts = ledger.alerts(
            status="pending" if pending else None, scope=scope, include_cleared=not active, limit=limit
        )
    if json_out:
        print_json([public_alert(a.to_dict()) for a in alerts])
        return
    if not alerts:
        console.print("no pending alerts" if pending else "no alerts")
        return
    table = Table(title="Alerts")
    for col in (
        "id",
        "when",
        "scope",
        "window",
        "alert",
        "level / limit",
        "status",
        "tries",
        "cleared",
        "last error",
    ):
        table.add_column(col, overflow="fold")
    for a in alerts:
        what = f"{a.kind} {a.threshold}" if a.kind == "threshold" else a.kind
        table.add_row(
            str(a.id),
            a.created_at.strftime("%Y-%m-%d %H:%M"),
            a.scope,
            f"{a.window} {a.window_key}",
            what,
            f"{format_amount(a.used + a.reserved)} / {format_quantity(a.limit, a.unit)}",
            a.status,
            str(a.attempts),
            "" if a.cleared_at is None else f"yes ({a.resolved_status or '-'})",
            scrub_urls(a.last_error or "")[:80],
        )
    console.print(table)


@alerts_app.command("test")
def test_command(
    sink_url: Annotated[
        str, typer.Argument(help="Sink URL: log://, stderr://, https://..., slack://..., smtp://...")
    ],
    secret: Annotated[
        str | None, typer.Option("--secret", help="Webhook signing secret (whsec_...).", show_default=False)
    ] = None,
    config_path: ConfigOption = None,
    dashboard: DashboardOption = None,
    json_out: JsonOption = False,
) -> None:
    """Send a sample alert to one sink, to check that it arrives."""
    from ..alerts import sample_message, sink_from_url
    from ..alerts.deliver import failure_text

    config = _config(config_path, None, dashboard)
    with boundary():
        sink = sink_from_url(sink_url, secret=secret or config.webhook_secret, timeout=config.timeout)
    message = sample_message(config.dashboard_url)
    try:
        sink.send(message)
    except Exception as exc:
        fail(f"{sink.name} did not accept the sample alert: {failure_text(sink, exc)}", EXIT_ERROR)
    finally:
        sink.close()
    if json_out:
        print_json({"sink": sink.name, "sent": True, "message": message.to_dict()})
        return
    console.print(f"sent a sample alert to {sink.name}")


@alerts_app.command("deliver")
def deliver_command(
    sink: Annotated[
        list[str] | None,
        typer.Option(
            "--sink", metavar="URL", help="Sink URL (repeat for several); replaces the config file's sinks."
        ),
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Keep delivering until interrupted.")] = False,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between passes with --loop.", show_default=False),
    ] = None,
    forecast: Annotated[
        bool,
        typer.Option(
            "--forecast/--no-forecast",
            help="Before each pass, write the forecast and pack-expiry alerts due (as "
            "`kling-cost forecast --alert`).",
        ),
    ] = True,
    config_path: ConfigOption = None,
    dashboard: DashboardOption = None,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Send pending alerts (and "resolved" messages) to the configured sinks, with retries."""
    from ..alerts.deliver import DeliveryReport, check_seconds

    config = _config(config_path, sink, dashboard)
    with boundary():
        pause = config.interval if interval is None else check_seconds(interval, "--interval")
    with opened(ledger_url, create=False) as ledger, boundary():
        deliverer: Deliverer = config.deliverer(ledger)

        def one_pass() -> DeliveryReport:
            if forecast:
                from ..bill.forecast import evaluate

                evaluate(ledger)
            return deliverer.deliver_pending()

        try:
            report = one_pass()
            if loop:
                import threading

                stop = threading.Event()
                with _stopping_on_signals(stop):
                    while not stop.wait(pause):
                        report.add(one_pass())
        finally:
            deliverer.close()
    if json_out:
        print_json(report.to_dict())
    else:
        console.print(
            f"delivered {report.delivered} alert(s) and {report.resolved} resolved message(s); "
            f"{report.failed} failed (kept pending, retried with backoff); cleared {report.cleared}"
        )
        for error in report.errors:
            console.print(f"  {error}", markup=False)
    if report.failed and not loop:
        raise typer.Exit(EXIT_ERROR)


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM end the loop between passes, never in the middle of a delivery."""
    import signal

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
