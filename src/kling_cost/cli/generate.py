"""``kling-cost batch plan|run``, ``kling-cost settle`` and ``kling-cost advise``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..money import format_amount, format_quantity, parse_amount
from ._common import (
    EXIT_ERROR,
    CatalogOption,
    JsonOption,
    LedgerOption,
    boundary,
    console,
    err_console,
    fail,
    print_json,
)
from ._typer import App
from .budget import opened

if TYPE_CHECKING:  # imported where used: `kling-cost --help` must not load the HTTP client
    from ..batch import BatchPlan, BatchResult, BatchRow
    from ..guard import CostAwareClient

batch_app = App(help="Plan and run batches of generations within budget.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="One prompt per line, or .jsonl / .csv rows with fields.")]
KindOption = Annotated[str, typer.Option("--kind", help="Default endpoint (text2video, image, ...).")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Default model: a legacy model_name (kling-v3), or a new-standard id (kling-3.0): "
        "rows with one go out on the new standard.",
    ),
]
ModeOption = Annotated[str | None, typer.Option("--mode", help="Default mode: std/pro/4k.")]
ResolutionOption = Annotated[
    str | None,
    typer.Option(
        "--resolution", help="Default resolution instead of --mode: 720p, 1080p, 4k (images: 1k, 2k, 4k)."
    ),
]
DurationOption = Annotated[int | None, typer.Option("--duration", help="Default duration (s).")]
AudioOption = Annotated[bool, typer.Option("--audio/--no-audio", help="Default: generate sound.")]
ScopeOption = Annotated[
    list[str] | None, typer.Option("--scope", help="Budget scope to charge (repeatable), e.g. project:film.")
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", envvar="KLING_BASE_URL", help="Kling API base URL (default: Kling's global)."),
]


def _defaults(
    kind: str,
    model: str | None,
    mode: str | None,
    duration: int | None,
    audio: bool,
    resolution: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "endpoint": kind,
        "model_name": model,
        "mode": mode,
        "duration": duration,
        "resolution": resolution,
    }
    if audio:
        out["sound"] = "on"
    return out


ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar="KLING_COST_CONFIG",
        help="TOML file with an [alerts] table: alerts also go to its sinks while the batch runs "
        "(they are always printed). Default: $KLING_COST_CONFIG.",
        show_default=False,
    ),
]


def _plan(rows: list[BatchRow], file: Path, ledger: Any, scopes: list[str], catalog: str | None) -> BatchPlan:
    """Price the rows; an item that cannot be priced is named by its file and line."""
    from ..batch import plan_batch

    return plan_batch(
        [{"endpoint": r.endpoint, **r.body} for r in rows],
        ledger,
        scopes,
        catalog=catalog,
        labels=[f"{file}:{r.line}" for r in rows],
    )


def _print_plan(plan: BatchPlan) -> None:
    from rich.table import Table

    from ..batch.plan import plural

    usd = "" if plan.usd is None else f" (USD {format(plan.usd.normalize(), 'f')})"
    console.print(
        f"Batch estimate: {plural(len(plan.items), 'request')} = "
        f"[bold]{format_quantity(plan.total, plan.unit)}[/bold]{usd}"
    )
    for u in plan.budgets:
        console.print(
            f"  {u.scope} {u.budget.window} budget: {format_amount(u.remaining)} of "
            f"{format_quantity(u.limit, u.unit)} remaining ({u.window.key})"
        )
    for u in plan.mismatched:
        console.print(
            f"  {u.scope} {u.budget.window} budget: counts {u.unit}, not {plan.unit} "
            f"({format_amount(u.remaining)} of {format_quantity(u.limit, u.unit)} remaining)"
        )
    if plan.mismatched:
        console.print(f"[red]cannot run: {plan.unit_problem}[/red]", soft_wrap=True)
    elif plan.fits:
        console.print("[green]fits within every budget[/green]")
    else:
        console.print(f"[red]{plan.message}[/red]")
    if plan.alternatives:
        # A USD column only when the catalog has USD rates (the app's credits catalog has none).
        has_usd = any(alt.saving_usd is not None for alt in plan.alternatives)
        table = Table(title=f"Cheaper alternatives (in {plan.unit})")
        for col in ("change", "total", "saving", *(("USD saved",) if has_usd else ()), "%"):
            table.add_column(col, justify="left" if col == "change" else "right")
        for alt in plan.alternatives:
            usd_cell = "" if alt.saving_usd is None else format(alt.saving_usd.normalize(), "f")
            table.add_row(
                alt.description,
                format_amount(alt.total),
                format_amount(alt.saving),
                *((usd_cell,) if has_usd else ()),
                f"{alt.saving_percent}%",
            )
        console.print(table)


@batch_app.command("plan")
def plan_command(
    file: FileArg,
    kind: KindOption = "text2video",
    model: ModelOption = None,
    mode: ModeOption = None,
    resolution: ResolutionOption = None,
    duration: DurationOption = None,
    audio: AudioOption = False,
    scope: ScopeOption = None,
    catalog: CatalogOption = None,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Price a batch file: total, what remains in each budget, how many fit, cheaper options."""
    from ..batch import read_batch

    with boundary():
        rows = read_batch(file, _defaults(kind, model, mode, duration, audio, resolution))
    with opened(ledger_url, create=False) as ledger, boundary():
        plan = _plan(rows, file, ledger, scope or [], catalog)
    if json_out:
        print_json(plan.to_dict())
    else:
        _print_plan(plan)


@contextmanager
def _guard(
    ledger_url: str | None, base_url: str | None, catalog: str | None, scopes: list[str], dedup: bool
) -> Iterator[CostAwareClient]:
    from ..cache import CachePolicy
    from ..guard import CostAwareClient
    from ..kling import KlingClient

    with opened(ledger_url) as ledger, boundary():
        client = KlingClient(base_url=base_url)
        with CostAwareClient(
            client, ledger, catalog=catalog or "kling-api", scopes=scopes, cache=CachePolicy(enabled=dedup)
        ) as guard:
            yield guard


@batch_app.command("run")
def run_command(
    ctx: typer.Context,
    file: FileArg,
    kind: KindOption = "text2video",
    model: ModelOption = None,
    mode: ModeOption = None,
    resolution: ResolutionOption = None,
    duration: DurationOption = None,
    audio: AudioOption = False,
    scope: ScopeOption = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Tasks running at once (<= your pack's limit).")
    ] = 5,
    results: Annotated[
        Path | None,
        typer.Option("--results", help="Append one JSON line per row here (default: FILE.results.jsonl)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run without asking, whatever the plan costs.")
    ] = False,
    approve_above: Annotated[
        str, typer.Option("--approve-above", help="Ask before running a plan costing more than this.")
    ] = "0",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; send nothing.")] = False,
    dedup: Annotated[bool, typer.Option("--dedup/--no-dedup", help="Reuse identical requests.")] = True,
    poll: Annotated[float, typer.Option("--poll", min=0.01, help="Seconds between task polls.")] = 2.0,
    task_timeout: Annotated[
        float,
        typer.Option(
            "--task-timeout",
            min=1,
            help="Seconds to wait for one task to end; then its row is an error and its hold is "
            "left to `kling-cost settle`.",
        ),
    ] = 1800.0,
    config_path: ConfigOption = None,
    base_url: BaseUrlOption = None,
    catalog: CatalogOption = None,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run a batch within budget: progress, bounded concurrency, resumable, fills the budget.

    A row a budget refuses waits while tasks still run (a refund may free room) and is tried
    again; the run ends when nothing more fits. Alerts are printed (and sent to the configured
    sinks) as they fire. Ctrl-C stops submitting and settles what runs; Ctrl-C again leaves
    the running tasks to `kling-cost settle`. Either way it prints the command that resumes
    (exit 130). SIGTERM (docker stop, systemd) stops it the same way (exit 143)."""
    from ..batch import read_batch
    from ._batchrun import alert_config, execute, report

    with boundary():
        rows = read_batch(file, _defaults(kind, model, mode, duration, audio, resolution))
        threshold = parse_amount(approve_above, what="--approve-above", allow_zero=True)
    results = results or file.with_name(file.name + ".results.jsonl")
    if results.resolve() == file.resolve():  # results appended to the rows would be re-read as rows
        fail(f"--results {results} is the batch file itself; give another file")
    alerts = alert_config(config_path)  # a bad file or sink URL: one line, before anything is sent
    with opened(ledger_url) as ledger, boundary():
        plan = _plan(rows, file, ledger, scope or [], catalog)
    if plan.mismatched:  # the ledger would refuse every row: say so before anything is sent
        fail(plan.unit_problem)
    if not json_out:
        _print_plan(plan)
    if dry_run:
        if json_out:
            print_json({"plan": plan.to_dict(), "dry_run": True})
        return
    try:  # a results file that cannot be written: one line, before anything is reserved or sent
        with open(results, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        fail(f"--results {results} cannot be written ({exc.strerror or exc}); give a writable file")
    if plan.total > threshold and not yes:
        if not sys.stdin.isatty():
            fail(f"{plan.fit_text}: pass --yes to run the batch (or raise --approve-above)")
        if not typer.confirm(plan.question):
            raise typer.Exit(1)
    with _guard(ledger_url, base_url, catalog, scope or [], dedup) as guard:
        outcome = execute(
            guard,
            rows,
            concurrency=concurrency,
            poll=poll,
            results=results,
            alerts_config=alerts,
            json_out=json_out,
            task_timeout=task_timeout,
        )
    code = report(outcome, plan, results, ctx, json_out)
    if code:
        raise typer.Exit(code)
    _fail_on_errors(outcome.summary.results, results, show=not json_out)


def _fail_on_errors(outcomes: list[BatchResult], results: Path, *, show: bool) -> None:
    """Rows that could not be sent or settled (not refusals: a budget stopping a batch is its
    job) make the run exit 1, each named (``show``), so a half-done batch never looks done."""
    from ..batch.run import ERROR

    errors = [r for r in outcomes if r.status == ERROR]
    if not errors:
        return
    if show:
        for r in errors:
            err_console.print(f"  line {r.line}: {r.error}", markup=False, soft_wrap=True)
    n = len(errors)
    fail(
        f"{n} row{'' if n == 1 else 's'} could not be sent or settled (see {results}); fix "
        f"{'it' if n == 1 else 'them'} and run the same command again: rows already done are skipped",
        EXIT_ERROR,
    )


def settle_command(
    base_url: BaseUrlOption = None,
    ledger_url: LedgerOption = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            "--catalog",
            hidden=True,
            help="Ignored: each reservation is settled in the unit and catalog it recorded.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Finish what crashed processes left: settle every reservation whose task has ended.

    Amounts are settled in the unit each reservation recorded (units: Kling's
    final_unit_deduction; credits: the reserved estimate), whatever catalog is configured.
    Exits 1 when some could not be settled (they stay as they were: run it again)."""
    del catalog  # accepted for old scripts; amounts never depend on it
    with _guard(ledger_url, base_url, None, [], True) as guard, boundary():
        report = guard.settle_pending()
    if json_out:
        print_json(report.to_dict())
    else:
        console.print(
            f"committed {len(report.committed)}, released {len(report.released)}, still running "
            f"{len(report.running)}, errors {len(report.errors)}"
        )
        for line in report.errors:
            err_console.print(f"  {line}", markup=False)
    if report.errors:
        fail(
            f"{len(report.errors)} reservation(s) could not be settled and stay as they were; "
            "fix the cause (e.g. --base-url, credentials) and run `kling-cost settle` again",
            EXIT_ERROR,
        )


MAX_ADVISE_COUNT = 10_000
"""Most identical requests ``advise --count`` prices one by one (savings scale with the count)."""


def advise_command(
    file: Annotated[Path | None, typer.Option("--file", help="Advise on a batch file instead.")] = None,
    kind: KindOption = "text2video",
    model: ModelOption = None,
    mode: ModeOption = None,
    resolution: ResolutionOption = None,
    duration: DurationOption = None,
    audio: AudioOption = False,
    count: Annotated[int, typer.Option("--count", min=1, help="How many such requests.")] = 1,
    catalog: CatalogOption = None,
    json_out: JsonOption = False,
) -> None:
    """What the seed's optimisation strategies would save on your request or batch."""
    from rich.table import Table

    from ..advisor import advise
    from ..batch import read_batch

    with boundary():
        if file is not None:
            rows = read_batch(file, _defaults(kind, model, mode, duration, audio, resolution))
            requests: list[Any] = [
                {"endpoint": r.endpoint, **{k: v for k, v in r.body.items() if k != "external_task_id"}}
                for r in rows
            ]
        else:
            if count > MAX_ADVISE_COUNT:
                fail(f"--count {count} is too many; advise on at most {MAX_ADVISE_COUNT} requests")
            one = {
                "kind": kind,
                "model": model,
                "mode": mode,
                "resolution": resolution,
                "duration": duration,
                "audio": audio,
            }
            requests = [one] * count
        advice = advise(requests, catalog=catalog, duplicates=file is not None)
    if json_out:
        print_json([a.to_dict() for a in advice])
        return
    # A USD column only when the catalog has USD rates (the app's credits catalog has none).
    usd = any(a.saving_usd is not None for a in advice)
    table = Table(title="Optimisation strategies, priced from the catalog")
    for col in ("strategy", "how", "saving", "%", *(("USD",) if usd else ()), "note"):
        table.add_column(col, overflow="fold")
    for a in advice:
        usd_cell = "" if a.saving_usd is None else format(a.saving_usd.normalize(), "f")
        table.add_row(
            a.strategy,
            a.how,
            f"{format_quantity(a.saving, a.unit)}",
            f"{a.saving_percent}%",
            *((usd_cell,) if usd else ()),
            a.note,
        )
    console.print(table)


__all__ = ["advise_command", "batch_app", "settle_command"]
