"""What ``kling-cost batch run`` does once the plan is approved: the progress bar, alerts
printed (and sent to the configured sinks) while it runs, Ctrl-C in two steps, the summary
and the exact command that resumes."""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..alerts import AlertsConfig, CallbackSink, Deliverer, DeliveryReport, load_config
from ..alerts.config import ENV_CONFIG
from ..batch import BatchPlan, BatchResult, BatchRow, BatchRunner, BatchSummary
from ..batch.plan import plural
from ..errors import KlingCostError
from ..guard import CostAwareClient
from ..ledger import Ledger, redact_url
from ._common import boundary, console, err_console, print_json

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
_URLS = ("ledger_url", "base_url")
"""Parameters holding a URL that may carry a password."""


def command_line(ctx: typer.Context, command: Sequence[str] | None = None, only: Sequence[str] = ()) -> str:
    """The command as typed: ``kling-cost`` + the sub-command names (or ``command``) + every
    parameter given on the command line (not those from the environment or defaults; with
    ``only``, just those), quoted for a POSIX shell. A URL's password (``--ledger``,
    ``--base-url``) is shown as ``***``: the command is printed, and terminals and CI logs
    keep what they print."""
    if command is None:
        names: list[str] = []
        current: Any = ctx
        while current.parent is not None:
            names.insert(0, current.info_name or "")
            current = current.parent
        command = names
    words = ["kling-cost", *command]
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if (only and name not in only) or source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params.get(name)
        if name in _URLS and isinstance(value, str):
            value = redact_url(value)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if param.param_type_name == "argument":
            words.extend(str(v) for v in values)
            continue
        opt = max(param.opts, key=len)
        secondary = list(getattr(param, "secondary_opts", ()))
        if getattr(param, "is_flag", False):
            if value or secondary:
                words.append(opt if value else max(secondary, key=len))
            continue
        for item in values:
            if item is not None:
                words.extend([opt, str(item)])
    return shlex.join(words)


@dataclass
class Outcome:
    summary: BatchSummary
    interrupted: int
    stop_reason: str | None
    alerts: list[str]
    alert_report: DeliveryReport
    stopped_by: str | None = None  # "Ctrl-C" or "SIGTERM", the first signal that stopped the run

    @property
    def exit_code(self) -> int:
        """0, or 130 (interrupted by Ctrl-C) / 143 (by SIGTERM), as a shell reports a signal."""
        if not self.interrupted:
            return 0
        return EXIT_TERMINATED if self.stopped_by == "SIGTERM" else EXIT_INTERRUPTED


def alert_config(config_path: str | None) -> AlertsConfig:
    """The alerts configuration (``--config`` / ``$KLING_COST_CONFIG``), checked now (a bad
    file or sink URL is one line before anything is sent). None configured: no sinks but the
    terminal, which takes the place of the default ``log://``."""
    with boundary():
        config = load_config(config_path)
    if config_path is None and not os.environ.get(ENV_CONFIG):
        config = config.with_sinks([])
    return config


def alert_deliverer(ledger: Ledger, config: AlertsConfig, printer: Any) -> Deliverer:
    """The configured sinks plus the terminal, always."""
    with boundary():
        return config.deliverer(ledger, [CallbackSink(printer, text=True, resolved=False, name="terminal")])


def _reasons(report: DeliveryReport) -> list[str]:
    """The distinct ``<sink>: <reason>`` of a delivery report's errors (``alert 3: ...``)."""
    out: list[str] = []
    for error in report.errors:
        for part in error.split(": ", 1)[-1].split("; "):
            if part not in out:
                out.append(part)
    return out


@contextmanager
def _two_step_interrupt(runner: BatchRunner, received: list[str]) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM (a service manager, ``docker stop``, ``kill``) while the batch
    runs: the first stops submitting and settles what runs, the second stops waiting; a third
    Ctrl-C is an ordinary KeyboardInterrupt and a third SIGTERM ends the process (the ledger's
    leases cover what is left). ``received`` gets each signal's name, for the messages."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        received.append("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C")
        if runner.interrupt() >= 2:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def _last_alerts(
    deliverer: Deliverer, runner: BatchRunner, out: Console, received: Sequence[str]
) -> DeliveryReport:
    """Stop the background deliverer and send what the last settlements crossed, in a
    thread this one waits for while watching for Ctrl-C or SIGTERM (``received`` names the
    signals so far): a slow sink may hold the pass (its timeout per alert), never the summary.
    Asked to leave (a signal now, or two during the run), the alerts stay pending (leased,
    then retried by `kling-cost alerts deliver`)."""
    # a signal the run did not notice (it came as the run ended) counts as one during the pass
    asked = runner.interrupted
    if runner.interrupt_requests >= 2:  # asked to leave: no last pass (a slow sink must not hold it)
        deliverer.stop(timeout=1.0)
        deliverer.detach()
        return DeliveryReport()
    result: list[DeliveryReport] = []

    def last_pass() -> None:
        deliverer.stop()
        try:
            result.append(deliverer.deliver_pending())
        except KlingCostError as exc:  # the ledger failed: the alerts stay pending
            result.append(DeliveryReport(failed=1, errors=[f"delivery pass failed: {exc}"]))
        except Exception as exc:  # pragma: no cover - a sink's failure is in the report already
            result.append(DeliveryReport(failed=1, errors=[f"delivery pass failed: {exc}"]))

    thread = threading.Thread(target=last_pass, name="kling-batch-alerts", daemon=True)
    thread.start()
    thread.join(1.0)
    if thread.is_alive():
        by = received[0] if received else "Ctrl-C"
        out.print(
            f"delivering the last alerts (a sink is slow); {by} leaves them pending for "
            "`kling-cost alerts deliver`",
            markup=False,
            soft_wrap=True,
        )
    while thread.is_alive():
        if runner.interrupt_requests > asked:
            deliverer.detach()  # the thread may still be sending: the sinks are left to it
            left_by = received[-1] if received else "Ctrl-C"
            return DeliveryReport(failed=1, errors=[f"last alert pass: left by {left_by}"])
        thread.join(0.1)
    deliverer.close()
    return result[0] if result else DeliveryReport()


def execute(
    guard: CostAwareClient,
    rows: list[BatchRow],
    *,
    concurrency: int,
    poll: float,
    results: Path,
    alerts_config: AlertsConfig,
    json_out: bool,
    task_timeout: float = 1800.0,
) -> Outcome:
    """Run the rows under a progress bar (on stderr), alerts printed above it as they are
    delivered, Ctrl-C in two steps."""
    alerts: list[str] = []
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=json_out,
    ) as progress:
        out: Console = progress.console
        bar = progress.add_task("generating", total=len(rows))

        def show_alert(text: str) -> None:
            alerts.append(text)
            out.print(f"ALERT: {text}", markup=False, soft_wrap=True, style="yellow")

        def advance(result: BatchResult) -> None:
            progress.update(bar, advance=1, description=f"line {result.line}: {result.status}")

        received: list[str] = []

        def stopping(level: int, in_flight: int) -> None:
            tasks = plural(in_flight, "task")
            them = "it" if in_flight == 1 else "them"
            if level == 1:
                by = received[0] if received else "Ctrl-C"
                stop = "stopping" if by == "Ctrl-C" else f"stopping ({by})"
                if in_flight:
                    out.print(
                        f"{stop}: {tasks} still running at Kling, waiting for {them} to settle; "
                        f"{by} again to leave {them} to `kling-cost settle`",
                        markup=False,
                        soft_wrap=True,
                    )
                else:
                    out.print(f"{stop}: nothing is running; no more rows are sent", markup=False)
                progress.update(bar, description=f"stopping: waiting for {tasks}")
            else:
                out.print(
                    f"leaving {tasks} running at Kling: "
                    f"{'its hold stays' if in_flight == 1 else 'their holds stay'} (leased) until "
                    f"`kling-cost settle` settles {them}",
                    markup=False,
                    soft_wrap=True,
                )
                progress.update(bar, description="interrupted")

        seen: set[str] = set()

        def failing_sinks(pass_report: DeliveryReport) -> None:
            for reason in _reasons(pass_report):  # once per sink and reason, not per retry
                if reason not in seen:
                    seen.add(reason)
                    out.print(
                        f"alerts not delivered to {reason} (kept pending, retried)",
                        markup=False,
                        soft_wrap=True,
                        style="red",
                    )

        deliverer = alert_deliverer(guard.ledger, alerts_config, show_alert)
        runner = BatchRunner(
            guard,
            rows,
            concurrency=concurrency,
            poll=poll,
            timeout=task_timeout,
            results_path=results,
            on_result=advance,
            on_stopping=stopping,
        )
        try:
            deliverer.start(interval=1.0, on_pass=failing_sinks)
            with _two_step_interrupt(runner, received):
                summary = runner.run()
                # a signal during the last alert pass (a slow sink) leaves the alerts pending and
                # still prints the summary and the resume command
                report = _last_alerts(deliverer, runner, out, received)
        except BaseException:  # a third Ctrl-C, or a failure: leave now, the alerts stay pending
            deliverer.stop(timeout=1.0)
            deliverer.close()
            raise
        finished = {0: "finished", 1: "interrupted (running tasks settled)", 2: "interrupted"}
        description = finished[runner.interrupted]
        if not runner.interrupted and runner.stop_reason:
            description = "stopped: nothing more fits"
        progress.update(bar, description=description)
    stopped_by = received[0] if received and runner.interrupted else None
    return Outcome(summary, runner.interrupted, runner.stop_reason, alerts, report, stopped_by)


def report(outcome: Outcome, plan: BatchPlan, results: Path, ctx: typer.Context, json_out: bool) -> int:
    """Print the summary and what to do next; returns the exit code (130 when interrupted by
    Ctrl-C, 143 by SIGTERM)."""
    summary = outcome.summary
    data: dict[str, Any] = summary.to_dict()
    if data["unit"] is None and data["spent"] is not None:
        data["unit"] = plan.unit  # nothing charged or saved: the plan's unit
    resume = command_line(ctx)
    settle = command_line(ctx, ["settle"], only=("ledger_url", "base_url"))
    not_sent = summary.count("skipped") + summary.count("refused")
    left = summary.count("running")
    # rows whose task sent but not seen to end (--task-timeout, Kling unreachable while polling):
    # their holds stay until `kling-cost settle` finds the tasks
    unsettled = sum(1 for r in summary.results if r.status == "error" and r.task_id)
    if outcome.stop_reason:
        data["stopped"] = outcome.stop_reason
    if outcome.interrupted:
        data["interrupted"] = True
    if not_sent or left:
        data["resume"] = resume
    if left or unsettled:
        data["settle"] = settle
    hidden = any(
        isinstance(ctx.params.get(name), str) and redact_url(ctx.params[name]) != ctx.params[name]
        for name in _URLS
        if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"
    )
    if json_out:
        print_json(
            {
                "plan": plan.to_dict(),
                "summary": data,
                "results": str(results),
                "alerts": outcome.alerts,
                "alerts_undelivered": outcome.alert_report.errors,
            }
        )
        return outcome.exit_code
    columns = ("done", "failed", "cached", "refused", "skipped", "errors", "earlier", "running")
    table = Table(title="Batch summary")
    for key in (*columns, "spent", "saved"):
        table.add_column(key, justify="right")
    table.add_row(*(str(data[k]) for k in columns), *(_per_unit(data, k) for k in ("spent", "saved")))
    console.print(table)
    if outcome.alert_report.errors:
        err_console.print(
            f"{plural(len(outcome.alert_report.errors), 'alert')} not delivered to every sink yet "
            f"(kept pending; `kling-cost alerts deliver` retries them): "
            f"{'; '.join(_reasons(outcome.alert_report))}",
            markup=False,
            soft_wrap=True,
        )
    if outcome.stop_reason and not outcome.interrupted:
        console.print(
            f"stopped submitting: {outcome.stop_reason}", markup=False, style="yellow", soft_wrap=True
        )
    console.print(f"results: {results}", markup=False, soft_wrap=True)
    if left:
        console.print(
            f"interrupted: {plural(left, 'task')} left running at Kling (held until settled). "
            "Settle them with:",
            markup=False,
            soft_wrap=True,
        )
        console.print(f"  {settle}", markup=False, soft_wrap=True)
        console.print("or resume the batch (it settles them too and sends the rest) with:", markup=False)
        console.print(f"  {resume}", markup=False, soft_wrap=True)
    elif outcome.interrupted:
        console.print(
            f"interrupted: every running task settled; {plural(not_sent, 'row')} not sent. Resume with:",
            markup=False,
            soft_wrap=True,
        )
        console.print(f"  {resume}", markup=False, soft_wrap=True)
    elif not_sent:
        console.print(
            f"{plural(not_sent, 'row')} not sent; run the same command when the budget has room:",
            markup=False,
            soft_wrap=True,
        )
        console.print(f"  {resume}", markup=False, soft_wrap=True)
    if unsettled and not left:
        console.print(
            f"{plural(unsettled, 'task')} sent but not seen to end (held until settled); "
            "settle when Kling has finished with:",
            markup=False,
            soft_wrap=True,
        )
        console.print(f"  {settle}", markup=False, soft_wrap=True)
    if hidden and (not_sent or left or unsettled):
        console.print(
            "(the URL's password is shown as ***: put it back, or give the URL in $KLING_COST_LEDGER "
            "/ $KLING_BASE_URL and leave the option out)",
            markup=False,
            soft_wrap=True,
        )
    return outcome.exit_code


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Outcome",
    "alert_config",
    "command_line",
    "execute",
    "report",
]


def _per_unit(summary: dict[str, Any], key: str) -> str:
    """``spent``/``saved`` beside its unit; one figure per unit when the run mixed units (a
    re-run resuming rows reserved in another unit): never one sum of units and credits."""
    if summary[key] is not None:
        return f"{summary[key]} {summary['unit']}"
    return " + ".join(f"{amount} {unit}" for unit, amount in summary[f"{key}_by_unit"].items())
