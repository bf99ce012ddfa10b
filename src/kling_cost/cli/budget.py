"""``kling-cost budget set|list|show|delete``, ``kling-cost usage`` and ``kling-cost ledger ...``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..money import format_amount, format_quantity
from ._common import JsonOption, LedgerOption, boundary, console, err_console, fail, print_json
from ._typer import App, Command

if TYPE_CHECKING:
    from rich.table import Table

    from ..budgets import Budget, Usage
    from ..ledger import Ledger

budget_app = App(help="Set, list, show and delete budgets.", no_args_is_help=True)
ledger_app = App(help="Maintain the ledger database.", no_args_is_help=True)

_NEGATIVE_NUMBER = re.compile(r"^-(\.?[0-9]|inf|nan|snan)", re.IGNORECASE)  # -inf, -Infinity, -NaN too


class NegativeNumbersAreValues(Command):
    """Reads ``-100`` (or ``-inf``) as an argument, not as the options ``-1 -0 -0`` (click's
    default), so a negative limit gets the library's clear refusal instead of "No such option: -1"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if any(_NEGATIVE_NUMBER.match(arg) for arg in args):
            ctx.ignore_unknown_options = True
        return super().parse_args(ctx, args)


WindowOption = Annotated[str, typer.Option("--window", "-w", help="day, week, month or lifetime.")]


@contextmanager
def opened(url: str | None, *, create: bool = True) -> Iterator[Ledger]:
    """The ledger at ``url``; commands that only read pass ``create=False``, so a missing
    SQLite file is one line and exit 4 instead of a new, empty ledger reporting nothing spent."""
    from ..ledger import open_ledger

    with boundary():
        ledger = open_ledger(url, create=create)
        try:
            yield ledger
        finally:
            ledger.close()


def _parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--at {value!r} is not a date-time; use e.g. 2026-11-27T12:00:00+00:00")
    if moment.tzinfo is None:
        fail(f"--at {value!r} needs a UTC offset, e.g. 2026-11-27T12:00:00+00:00")
    return moment


def _usage_table(usages: list[Usage], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for col in ("scope", "window", "period", "limit", "used", "reserved", "remaining", "used %"):
        left = col in ("scope", "window", "period")
        table.add_column(col, justify="left" if left else "right", overflow="fold")
    for u in usages:
        pct = "" if not u.limit else f"{(u.used + u.reserved) * 100 / u.limit:.1f}%"
        table.add_row(
            u.scope,
            u.budget.window,
            u.window.key,
            f"{format_quantity(u.limit, u.unit)}",  # the unit of every amount of the row
            format_amount(u.used),
            format_amount(u.reserved),
            format_amount(u.remaining),
            pct,
        )
    return table


@budget_app.command("set", cls=NegativeNumbersAreValues)
def set_command(
    scope: Annotated[str, typer.Argument(help="account, or kind:id such as project:film, key:alice.")],
    limit: Annotated[
        str | None, typer.Argument(help="Ceiling per window, in the budget's --unit (not with --from-packs).")
    ] = None,
    window: WindowOption = "day",
    unit: Annotated[
        str | None,
        typer.Option(
            "--unit",
            help="What the limit counts: units (Kling's API resource-pack units, catalog kling-api) "
            "or credits (the Kling app's credits, catalog kling-app-credits). Default: the budget's "
            "current unit, units for a new budget.",
            show_default=False,
        ),
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the window.")] = "UTC",
    thresholds: Annotated[
        str | None,
        typer.Option("--thresholds", help="Alert fractions, e.g. 0.5,0.8,1 (default).", show_default=False),
    ] = None,
    no_alerts: Annotated[
        bool, typer.Option("--no-alerts", help="No threshold alerts for this budget (refusals still alert).")
    ] = False,
    max_per_request: Annotated[
        str | None, typer.Option("--max-per-request", help="Refuse any single request above this.")
    ] = None,
    ledger_url: LedgerOption = None,
    from_packs: Annotated[
        str | None,
        typer.Option(
            "--from-packs",
            metavar="TYPE",
            help="Keep a lifetime budget (units) equal to what the online packs of TYPE (video, image, "
            "tryon) hold, asked from Kling now; `kling-cost packs --refresh` sets it again.",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", envvar="KLING_BASE_URL", help="Kling API base URL (with --from-packs)."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Create or update a budget (a raised limit applies at once)."""
    if from_packs is not None:
        _from_packs(scope, limit, window, unit, from_packs, ledger_url, base_url, json_out)
        return
    if limit is None:
        fail("give a LIMIT, or --from-packs TYPE (see: kling-cost budget set --help)")
    marks = None if thresholds is None else [t.strip() for t in thresholds.split(",") if t.strip()]
    if marks is not None and no_alerts:
        fail("give --thresholds or --no-alerts, not both")
    if marks == []:
        fail(
            f"--thresholds {thresholds!r} names no threshold; give fractions such as 0.5,0.8,1, "
            "or --no-alerts to switch this budget's threshold alerts off"
        )
    with opened(ledger_url) as ledger:
        budget = ledger.set_budget(
            scope,
            limit,
            window,
            tz=tz,
            thresholds=marks,
            max_per_request=max_per_request,
            unit=unit,
            alerts=not no_alerts,
        )
        clash = _account_clash(budget, ledger.budgets())
    if clash:
        err_console.print(f"note: {clash}", markup=False, soft_wrap=True)
    if json_out:
        print_json(budget.to_dict())
        return
    extra = (
        ""
        if budget.max_per_request is None
        else f", max {format_quantity(budget.max_per_request, budget.unit)} per request"
    )
    if not budget.thresholds:
        extra += ", no threshold alerts"
    console.print(
        f"budget {budget.scope} {budget.window}: {format_quantity(budget.limit, budget.unit)} per "
        f"{budget.window} ({budget.tz}){extra}"
    )


def _from_packs(
    scope: str,
    limit: str | None,
    window: str,
    unit: str | None,
    pack_type: str,
    ledger_url: str | None,
    base_url: str | None,
    json_out: bool,
) -> None:
    """``budget set SCOPE --from-packs TYPE``: see :mod:`kling_cost.bill.pack_budgets`."""
    from ..bill.pack_budgets import follow_packs
    from .packs import fresh_snapshot

    if limit is not None:
        fail("give a LIMIT or --from-packs, not both (the packs set the limit)")
    if window not in ("day", "lifetime"):  # "day" is the option's default: not asked for
        fail("--from-packs keeps a lifetime budget; leave --window out or give lifetime")
    if unit not in (None, "units"):
        fail("--from-packs counts units (the packs' units); leave --unit out or give units")
    if pack_type not in ("video", "image", "tryon"):
        fail(f"--from-packs {pack_type!r}: use video, image or tryon")
    with opened(ledger_url) as ledger:
        snap = fresh_snapshot(ledger, base_url, None)
        with boundary():
            kept = follow_packs(ledger, scope, pack_type, snap)
    if json_out:
        print_json(kept.to_dict())
        return
    console.print(
        f"budget {kept.scope} lifetime: {kept.limit} units, following the {pack_type} packs "
        f"(used {kept.used} + packs {kept.packs_remaining} - charged in the last 12 h "
        f"{kept.charged_recently})",
        markup=False,
    )


def _account_clash(budget: Budget, budgets: list[Budget]) -> str:
    """Why budgets of another unit than ``account``'s can never be charged (every reservation
    also counts on ``account``), or ``""``: a budget that is accepted but can never be used
    deserves a word when it is set."""
    accounts = [b for b in budgets if b.scope == "account" and b.unit != budget.unit]
    if budget.scope != "account" and accounts:
        acc = accounts[0]
        return (
            f"every reservation also counts on account, whose {acc.window} budget counts {acc.unit}: "
            f"reservations in {budget.unit} on {budget.scope} will be refused until that budget counts "
            f"{budget.unit} or is deleted (kling-cost budget delete account --window {acc.window})"
        )
    others = sorted({b.scope for b in budgets if b.scope != "account" and b.unit != budget.unit})
    if budget.scope == "account" and others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        return (
            f"every reservation also counts on account, which now counts {budget.unit}: the budgets of "
            f"{shown} in another unit can no longer be charged"
        )
    return ""


@budget_app.command("list")
def list_command(
    scope: Annotated[str | None, typer.Option("--scope", help="Only this scope.")] = None,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """List budgets with where they stand in their current window."""
    with opened(ledger_url, create=False) as ledger:
        usages = ledger.usages(scope)
    if json_out:
        print_json([{**u.budget.to_dict(), **u.to_dict()} for u in usages])
        return
    if not usages:
        console.print("no budgets yet; add one with: kling-cost budget set account 1000 --window day")
        return
    console.print(_usage_table(usages, "Budgets"))


@budget_app.command("show")
def show_command(
    scope: Annotated[str, typer.Argument(help="The scope to show.")],
    window: Annotated[str | None, typer.Option("--window", "-w", help="Which of its budgets.")] = None,
    at: Annotated[
        str | None, typer.Option("--at", metavar="TIME", help="A past moment (ISO 8601 with offset).")
    ] = None,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one scope's budgets: limit, used, reserved and remaining."""
    moment = _parse_at(at)
    with opened(ledger_url, create=False) as ledger:
        usages = [ledger.usage(scope, window, at=moment)] if window else ledger.usages(scope, at=moment)
    if not usages:
        fail(f"scope {scope} has no budget; set one with: kling-cost budget set {scope} LIMIT")
    if json_out:
        print_json([{**u.budget.to_dict(), **u.to_dict()} for u in usages])
        return
    console.print(_usage_table(usages, f"Budgets of {scope}"))


@budget_app.command("delete")
def delete_command(
    scope: Annotated[str, typer.Argument(help="The scope.")],
    window: WindowOption = "day",
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a budget (its charges stay in the ledger)."""
    with opened(ledger_url, create=False) as ledger:
        deleted = ledger.delete_budget(scope, window)
    if json_out:
        print_json({"deleted": deleted, "scope": scope, "window": window})
        return
    if not deleted:
        fail(f"scope {scope} has no {window} budget")
    console.print(f"deleted the {window} budget of {scope}")


def usage_command(
    scope: Annotated[str | None, typer.Option("--scope", help="Only this scope.")] = None,
    at: Annotated[
        str | None, typer.Option("--at", metavar="TIME", help="A past moment (ISO 8601 with offset).")
    ] = None,
    charges: Annotated[int, typer.Option("--charges", help="Also list the N latest charges.")] = 0,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Where every budget stands now (or --at a past moment), and the latest charges."""
    if charges < 0:
        fail(f"--charges {charges}: give how many of the latest charges to list, 0 or more")
    moment = _parse_at(at)
    with opened(ledger_url, create=False) as ledger:
        usages = ledger.usages(scope, at=moment)
        latest = ledger.charges(scope)[-charges:] if charges > 0 else []
        totals = ledger.totals()
    if json_out:
        print_json(
            {
                "budgets": [u.to_dict() for u in usages],
                "charges": [c.to_dict() for c in latest],
                "totals": {unit: {k: str(v) for k, v in sums.items()} for unit, sums in totals.items()},
            }
        )
        return
    if usages:
        console.print(_usage_table(usages, "Usage"))
    else:
        console.print("no budgets yet; add one with: kling-cost budget set account 1000 --window day")
    if latest:
        from rich.table import Table

        table = Table(title="Latest charges")
        for col in ("when", "task", "status", "model", "mode", "s", "estimate", "actual", "unit", "prompt"):
            table.add_column(col, overflow="fold")
        for c in latest:
            table.add_row(
                c.created_at.strftime("%Y-%m-%d %H:%M"),
                c.task_id or "",
                c.status.replace("cache_hit", "cached"),
                c.model or "",
                c.mode or "",
                "" if c.duration is None else str(c.duration),
                format_amount(c.estimate),
                format_amount(c.actual),
                c.unit,
                (c.prompt_preview or "")[:40],
            )
        console.print(table)
    if not totals:
        console.print("nothing charged or held yet")
    for unit, sums in totals.items():  # one line per unit: amounts of different units never add up
        console.print(
            f"charged in all: {format_quantity(sums['charged'], unit)}; held by open reservations: "
            f"{format_quantity(sums['reserved'], unit)}"
        )


@ledger_app.command("migrate")
def migrate_command(ledger_url: LedgerOption = None, json_out: JsonOption = False) -> None:
    """Create or upgrade the ledger's schema (safe to run while others use it)."""
    with opened(ledger_url) as ledger:
        version = ledger.migrate()
        url = ledger.url
    if json_out:
        print_json({"ledger": url, "schema_version": version})
        return
    console.print(f"{url}: schema version {version}")


@ledger_app.command("copy")
def copy_command(
    source: Annotated[str, typer.Option("--from", help="Ledger URL to copy from.")],
    target: Annotated[str, typer.Option("--to", help="Empty ledger URL to copy into.")],
    json_out: JsonOption = False,
) -> None:
    """Copy a whole ledger (budgets, usage, reservations, charges) into an empty one."""
    from ..ledger import copy_ledger

    with opened(source, create=False) as src, opened(target) as dst, boundary():
        result = copy_ledger(src, dst)
        shown = {"from": src.url, "to": dst.url}  # passwords as ***
    if json_out:
        print_json({**shown, "rows": result.rows, "total": result.total})
        return
    parts = ", ".join(f"{n} {t}" for t, n in result.rows.items())
    console.print(f"copied {result.total} rows: {parts}")


@ledger_app.command("sweep")
def sweep_command(ledger_url: LedgerOption = None, json_out: JsonOption = False) -> None:
    """Reclaim reservations whose lease expired (also done on every reservation)."""
    with opened(ledger_url, create=False) as ledger:
        count = ledger.sweep()
    if json_out:
        print_json({"reclaimed": count})
        return
    console.print(f"reclaimed {count} expired reservation(s)")
