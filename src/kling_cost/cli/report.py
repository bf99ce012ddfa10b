"""``kling-cost report``, ``kling-cost export`` and ``kling-cost serve``."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer

from ..money import format_amount, format_quantity
from ._common import LedgerOption, boundary, console, fail, print_json
from .budget import opened

if TYPE_CHECKING:  # imported where used: `kling-cost --help` must not load the reports
    from rich.table import Table

    from ..reports import DailyUsage, Report, ReportRow

SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="30d (the last 30 days, today included), YYYY-MM-DD or an ISO time."),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="YYYY-MM-DD (that day included) or an ISO time (excluded).")
]
ScopeOption = Annotated[str | None, typer.Option("--scope", help="Only charges of this scope.")]
TzOption = Annotated[str, typer.Option("--tz", help="IANA time zone of days, weeks and months.")]
BAR_WIDTH = 40


def report_command(
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Comma-separated: day|week|month, model, mode, duration, audio, kind, status, "
            "scope|project|key|user.",
        ),
    ] = "day",
    since: SinceOption = "30d",
    until: UntilOption = None,
    scope: ScopeOption = None,
    tz: TzOption = "UTC",
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    ledger_url: LedgerOption = None,
) -> None:
    """Usage grouped by time, model, mode, scope, status...: estimate vs actual, refunds, cache
    savings; every amount with its unit (units or credits), one total per unit."""
    from ..reports import daily_usage, parse_by, report
    from ..reports.aggregate import METRICS
    from ..reports.export import csv_row

    if fmt not in ("table", "json", "csv"):
        fail(f"--format {fmt!r} is unknown; use table, json or csv")
    with boundary():
        dims = parse_by(by)
    with opened(ledger_url, create=False) as ledger, boundary():
        moment = ledger.clock()
        rep = report(ledger, dims, since=since, until=until, scope=scope, tz=tz, now=moment)
        daily, note = None, ""
        if fmt == "table":
            days, last, cut = _chart_period(rep, moment)
            daily = daily_usage(ledger, days, scope=scope, tz=tz, now=last)
            note = f"; the last {days} days of the period" if cut else ""
    if fmt == "json":
        print_json(rep.to_dict())
    elif fmt == "csv":
        columns = (*rep.by, "unit", *METRICS)
        sys.stdout.write(csv_row(columns))
        for row in rep.rows:
            sys.stdout.write(csv_row(str(v) if isinstance(v, bool) else v for v in _csv_row(row, columns)))
    else:
        console.print(_table(rep))
        _overages(rep)
        if daily is not None:
            _bar_chart(daily, note)


def _csv_row(row: ReportRow, columns: tuple[str, ...]) -> list[object]:
    """Amounts and percentages in the exports' form (``70``, ``2.5``; see ``export``)."""
    data = row.to_dict()
    out: list[object] = []
    for k in columns:
        value = data[k]
        if k in AMOUNT_METRICS or (k == "drift_pct" and value is not None):
            value = format_amount(Decimal(value))
        out.append("" if value is None else value)
    return out


AMOUNT_METRICS = ("estimate", "actual", "drift", "refunded", "saved")
OVERAGE_LINES = 10


def _overages(rep: Report) -> None:
    """The charges that took a budget past its limit: the overage is never silent."""
    if not rep.overages:
        return
    n = len(rep.overages)
    console.print(
        f"[red]Over the limit: {n} charge{'' if n == 1 else 's'} took a budget past its limit, "
        + ", ".join(f"{format_amount(v)} {u}" for u, v in rep.overage.items())
        + " over in total[/red]",
        highlight=False,
        soft_wrap=True,
    )
    for c in rep.overages[-OVERAGE_LINES:]:
        scopes = ", ".join(s for s in c.scopes if s != "account") or "account"
        console.print(
            f"  {c.created_at:%Y-%m-%d %H:%M} UTC  task {c.task_id or '-'} ({scopes}): charged "
            f"{format_quantity(c.actual, c.unit)} on an estimate of {format_amount(c.estimate)}, "
            f"{format_quantity(c.overage, c.unit)} over the limit",
            highlight=False,
            soft_wrap=True,
        )
    if n > OVERAGE_LINES:
        console.print(f"  ... and {n - OVERAGE_LINES} earlier (--format json, or kling-cost export)")


CHART_DAYS = 60
"""The text chart shows at most this many days: the last ones of the report's period."""


def _chart_period(rep: Report, now: datetime) -> tuple[int, datetime, bool]:
    """How many days the chart shows, an instant of its last day, and whether that cuts the
    period: the report's period (its last :data:`CHART_DAYS` days), up to ``--until`` or now;
    the last 30 days for all time."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(rep.tz)
    last = (rep.until - timedelta(microseconds=1)) if rep.until else now
    if rep.since is None:
        return 30, last, True
    days = (last.astimezone(zone).date() - rep.since.astimezone(zone).date()).days + 1
    return max(1, min(days, CHART_DAYS)), last, days > CHART_DAYS


def _table(rep: Report) -> Table:
    """One row per group and unit, then one total per unit: amounts of different units are
    never added together."""
    from rich.table import Table

    period = f"since {rep.since:%Y-%m-%d %H:%M} UTC" if rep.since else "all time"
    table = Table(
        title=f"Usage by {', '.join(rep.by) or 'total'} ({period}, {rep.tz}; from the {rep.source})",
        caption=None if rep.totals else "no charges in this period",
    )
    for dim in rep.by:
        table.add_column(dim, overflow="fold")
    table.add_column("unit", min_width=len("credits"), no_wrap=True)
    for col in ("charges", "ok", "failed", "cached", "estimate", "actual", "drift", "refunded", "saved"):
        table.add_column(col, justify="right")
    last = rep.rows[-1] if rep.rows else None
    for row in rep.rows:
        keys = ["(none)" if row.key[d] is None else str(row.key[d]) for d in rep.by]
        table.add_row(*keys, *_cells(row), end_section=row is last)
    for total in rep.totals:
        keys = ["total" if i == 0 else "" for i in range(len(rep.by))]
        table.add_row(*keys, *_cells(total), style="bold")
    return table


def _cells(row: ReportRow) -> list[str]:
    pct = row.drift_pct
    return [
        row.unit,
        str(row.charges),
        str(row.succeeded),
        str(row.failed),
        str(row.cache_hits),
        format_amount(row.estimate),
        format_amount(row.actual),
        format_amount(row.drift) + ("" if pct is None else f" ({pct}%)"),
        format_amount(row.refunded),
        format_amount(row.saved),
    ]


def _bar_chart(daily: DailyUsage, note: str = "") -> None:
    """Daily actual usage as bars, one chart per unit; ``|`` marks the daily limit on the
    chart of the limit's unit. Runs of days with no usage are one line each."""
    for unit in daily.units:
        days = daily.series(unit)
        limit = daily.limit if daily.unit == unit else None
        peak = max([r.actual for r in days] + [limit or Decimal(0)])
        if daily.limit is None:
            limit_txt = "no daily budget"
        elif limit is None:
            limit_txt = f"the daily budget counts {daily.unit}"
        else:
            limit_txt = f"limit {format_quantity(limit, unit)} per day"
        console.print(
            f"Daily usage of {daily.scope} in {unit} ({daily.tz}; {limit_txt}{note})", highlight=False
        )
        if not any(r.actual for r in days):
            console.print(f"  no usage in this period ({len(days)} days)", highlight=False)
            continue
        mark = None if limit is None else int(limit * BAR_WIDTH / peak)
        for run in _runs(days):
            if len(run) >= EMPTY_RUN:
                first, last = run[0].key["day"], run[-1].key["day"]
                console.print(f"  {first} … {last}  {len(run)} days with no usage", highlight=False)
                continue
            for row in run:
                filled = int(row.actual * BAR_WIDTH / peak)
                cells = ["█" if i < filled else " " for i in range(BAR_WIDTH + 1)]
                if mark is not None:
                    cells[min(mark, BAR_WIDTH)] = "|" if cells[min(mark, BAR_WIDTH)] == " " else "┃"
                over = limit is not None and row.actual > limit
                line = f"  {row.key['day']} {''.join(cells)} {format_quantity(row.actual, unit)}"
                console.print(f"[red]{line}[/red]" if over else line, highlight=False)


EMPTY_RUN = 2
"""Days in a row with no usage that the text chart folds into one line."""


def _runs(days: tuple[ReportRow, ...]) -> list[list[ReportRow]]:
    """``days`` cut into runs: each day with usage alone, days without usage together."""
    runs: list[list[ReportRow]] = []
    for row in days:
        if not row.actual and runs and not runs[-1][-1].actual:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def export_command(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    since: SinceOption = None,
    until: UntilOption = None,
    scope: ScopeOption = None,
    tz: TzOption = "UTC",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    ledger_url: LedgerOption = None,
) -> None:
    """Export raw charges (timestamp, task_id, credits, unit, model, duration, mode, prompt_preview, ...)."""
    import io

    from ..reports import export_charges

    if fmt not in ("jsonl", "csv"):
        fail(f"--format {fmt!r} is unknown; use jsonl or csv")
    with opened(ledger_url, create=False) as ledger, boundary():
        if output is None:
            export_charges(ledger, sys.stdout, fmt, since=since, until=until, scope=scope, tz=tz)
            return
        buffer = io.StringIO(newline="")  # the file is touched only once the export succeeded
        count = export_charges(ledger, buffer, fmt, since=since, until=until, scope=scope, tz=tz)
        try:
            with open(output, "w", encoding="utf-8", newline="") as fh:
                fh.write(buffer.getvalue())
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
    console.print(f"exported {count} charge(s) to {output}", highlight=False)


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8787,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="KLING_COST_DASHBOARD_TOKEN",
            help="Access token (required to bind a non-loopback address).",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Also answer requests whose Host header is this name (repeatable); loopback names "
            "and the bound address are always allowed, anything else gets 421.",
            show_default=False,
        ),
    ] = None,
    tz: TzOption = "UTC",
    refresh: Annotated[int, typer.Option("--refresh", help="Auto-refresh period in seconds.")] = 30,
    ledger_url: LedgerOption = None,
) -> None:
    """Serve the read-only web dashboard and its JSON API (/api/...)."""
    from ._serving import listen, require_server, run_server, url_host

    with boundary():
        from ..web import create_dashboard_app, is_loopback

        if not is_loopback(host) and not token:
            fail(f"binding {host} (not loopback) needs --token or KLING_COST_DASHBOARD_TOKEN")
        require_server("the dashboard")

    if refresh < 1:
        fail(f"--refresh {refresh}: give the auto-refresh period in seconds, at least 1")
    with opened(ledger_url, create=False) as ledger, boundary():
        app = create_dashboard_app(
            ledger,
            token=token,
            bound_host=host,
            allowed_hosts=allowed_host or (),
            tz=tz,
            refresh_seconds=refresh,
        )
        sock = listen(host, port)
        suffix = "/?token=..." if token else "/"
        shown = f"http://{url_host(host)}:{sock.getsockname()[1]}{suffix}"
        console.print(f"dashboard on {shown} (Ctrl-C to stop)", highlight=False)
        console.file.flush()
        run_server(app, sock)
