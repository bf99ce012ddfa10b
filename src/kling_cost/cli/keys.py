"""``kling-cost keys create|list|show|revoke|rotate``: the proxy's virtual keys.

A thin face over :mod:`kling_cost.proxy.keys`: a key's credentials are printed once, by
``create`` and ``rotate``; the ledger keeps none of its secrets (they are derived from the
master key, which ``create`` and ``rotate`` load, from ``KLING_COST_MASTER_KEY`` or the key file).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..money import format_amount, format_quantity
from ._common import JsonOption, LedgerOption, boundary, console, fail, print_json
from ._typer import App
from .budget import opened

if TYPE_CHECKING:
    from ..budgets import Usage
    from ..ledger import Ledger
    from ..ledger.proxy_store import KeyRecord
    from ..proxy.keys import IssuedKey, MasterKey

keys_app = App(
    help="Create, list, show, revoke and rotate the proxy's virtual keys.",
    no_args_is_help=True,
)

DEFAULT_PROXY_URL = "http://127.0.0.1:8788"

NameArgument = Annotated[str, typer.Argument(help="The key's name (its budgets live on scope key:NAME).")]
ProxyUrlOption = Annotated[
    str,
    typer.Option(
        "--proxy-url",
        envvar="KLING_COST_PROXY_URL",
        metavar="URL",
        help="The proxy's base URL, for the lines that say how to use the key "
        "(default: kling-cost proxy's own, http://127.0.0.1:8788; or $KLING_COST_PROXY_URL).",
        show_default=False,
    ),
]


def _usages(ledger: Ledger, records: Sequence[KeyRecord]) -> dict[str, list[Usage]]:
    """The budgets of each key's own scope, where they stand now (one read for all keys)."""
    own = {r.scope for r in records}
    found: dict[str, list[Usage]] = {scope: [] for scope in own}
    for usage in ledger.usages():
        if usage.scope in own:
            found[usage.scope].append(usage)
    return found


def _budget_dict(usage: Usage) -> dict[str, Any]:
    return {
        "window": usage.budget.window,
        "tz": usage.budget.tz,
        "unit": usage.unit,
        "limit": str(usage.limit),
        "spent": str(usage.used),
        "reserved": str(usage.reserved),
        "remaining": str(usage.remaining),
        "period": usage.window.key,
    }


def _budget_text(usages: Sequence[Usage]) -> str:
    if not usages:
        return "none"
    return "; ".join(
        f"{format_amount(u.used)}/{format_quantity(u.limit, u.unit)} per {u.budget.window} "
        f"({format_amount(u.remaining)} left)"
        for u in usages
    )


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _master() -> MasterKey:
    from ..proxy.keys import MasterKey

    with boundary():
        return MasterKey.load()


def _credentials(issued: IssuedKey, master: MasterKey, proxy_url: str, verb: str) -> None:
    """The credentials, once, and how to use them (plain lines: a secret must never wrap)."""
    record = issued.record
    scopes = ", ".join((*record.all_scopes, "account"))
    typer.echo(f"{verb} key {record.name} (reserves on {scopes}; unit {record.unit})")
    typer.echo(f"  access key:     {issued.access_key}")
    typer.echo(f"  secret key:     {issued.secret_key}")
    typer.echo(f"  API key:        {issued.api_key}")
    typer.echo(f"  webhook secret: {issued.webhook_secret}")
    typer.echo(
        "These secrets are shown now and never again: the ledger keeps none of them (the secret key "
        f"and webhook secret are derived from the master key in {master.source}, fingerprint "
        f"{master.fingerprint}; every proxy process needs that same master key)."
    )
    typer.echo(
        f"Use them: base URL {proxy_url} (kling-cost proxy) with Authorization: Bearer <API key>, "
        "or the access key + secret key wherever a tool asks for Kling's AK/SK (it signs the JWT). "
        "Relayed callbacks are signed with the webhook secret (Standard Webhooks)."
    )


def _issued_json(issued: IssuedKey, master: MasterKey, proxy_url: str, now: datetime) -> dict[str, Any]:
    return {
        **issued.to_dict(now),
        "proxy_url": proxy_url,
        "master_key": {"source": master.source, "fingerprint": master.fingerprint},
    }


@keys_app.command("create")
def create_command(
    name: NameArgument,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope its creates also reserve on, e.g. project:film (repeat for more). "
            "key:NAME and account are always reserved on.",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget",
            metavar="AMOUNT/WINDOW",
            help="A budget on key:NAME in the key's unit, e.g. 50/day, 1000/month (window: day, "
            "week, month or lifetime; repeat for more).",
            show_default=False,
        ),
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the --budget windows.")] = "UTC",
    unit: Annotated[
        str,
        typer.Option(
            "--unit",
            help="What its reservations and budgets count: units (Kling's API units) or credits (the app's).",
        ),
    ] = "units",
    max_per_request: Annotated[
        str | None,
        typer.Option(
            "--max-per-request", metavar="AMOUNT", help="Refuse any single create priced above this."
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            metavar="MODEL,...",
            help="The only models it may use, comma-separated: legacy (kling-v2-6) or new ids "
            "(kling-3.0). Default: every model.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="How many of its tasks may run at once.", show_default=False),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            metavar="DURATION",
            help="Refused after this long: Nd, Nh or Nm (days, hours, minutes), e.g. 30d.",
            show_default=False,
        ),
    ] = None,
    allow_callback_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-callback-host",
            metavar="HOST",
            help="A callback host allowed although it is private or loopback (repeat for more).",
            show_default=False,
        ),
    ] = None,
    proxy_url: ProxyUrlOption = DEFAULT_PROXY_URL,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a virtual key; prints its access key, secret key, API key and webhook secret once."""
    from ..budgets import validate_tz
    from ..proxy.keys import Keys, key_spec, parse_budget, parse_expiry

    with boundary():  # every setting is checked before anything is opened or written
        validate_tz(tz)  # also without --budget: a zone given is a zone meant
        spec = key_spec(
            name,
            scopes=scope or [],
            unit=unit,
            max_per_request=max_per_request,
            models=None if models is None else models.split(","),
            concurrency=concurrency,
            callback_hosts=allow_callback_host or [],
            expires_in=None if expires is None else parse_expiry(expires),
            budgets=[parse_budget(b, tz) for b in budget or []],
        )
    with opened(ledger_url) as ledger:
        master = _master()
        issued = Keys(ledger, master).issue(spec)
        usages = _usages(ledger, [issued.record])[issued.record.scope]
        now = ledger.clock()
    if json_out:
        data = _issued_json(issued, master, proxy_url, now)
        print_json({**data, "budgets": [_budget_dict(u) for u in usages]})
        return
    _credentials(issued, master, proxy_url, "created")
    typer.echo(f"Budgets of key:{name}: {_budget_text(usages)}")


@keys_app.command("list")
def list_command(ledger_url: LedgerOption = None, json_out: JsonOption = False) -> None:
    """List the keys: state, scopes, unit, budgets (spent and remaining) and last use."""
    with opened(ledger_url, create=False) as ledger:
        records = ledger.proxy.keys()
        usages = _usages(ledger, records)
        now = ledger.clock()
    if json_out:
        print_json(
            [{**r.to_dict(now), "budgets": [_budget_dict(u) for u in usages[r.scope]]} for r in records]
        )
        return
    if not records:
        console.print("no keys yet; make one with: kling-cost keys create NAME --scope project:NAME")
        return
    from rich.table import Table

    table = Table(title="Virtual keys")
    for column in ("name", "state", "scopes", "unit", "budgets", "last used"):
        table.add_column(column, overflow="fold")
    for r in records:
        scopes, budgets = ", ".join(r.all_scopes), _budget_text(usages[r.scope])
        table.add_row(r.name, r.state(now), scopes, r.unit, budgets, _when(r.last_used_at))
    console.print(table)


@keys_app.command("show")
def show_command(name: NameArgument, ledger_url: LedgerOption = None, json_out: JsonOption = False) -> None:
    """Show one key (never its secrets): settings, state, budgets and open tasks."""
    from ..proxy.keys import validate_key_name

    with boundary():
        validate_key_name(name)
    with opened(ledger_url, create=False) as ledger:
        record = ledger.proxy.key(name)
        if record is None:
            fail(f"no key named {name!r}; see kling-cost keys list")
        usages = _usages(ledger, [record])[record.scope]
        open_tasks = ledger.proxy.open_count(record)
        now = ledger.clock()
    limit = record.max_per_request
    data = {**record.to_dict(now), "budgets": [_budget_dict(u) for u in usages], "open_tasks": open_tasks}
    if json_out:
        print_json(data)
        return
    lines = [
        ("state", record.state(now)),
        ("access key", record.access_key),
        ("scopes", ", ".join(record.all_scopes) + ", account"),
        ("unit", record.unit),
        ("budgets", _budget_text(usages)),
        ("max per request", "none" if limit is None else format_quantity(limit, record.unit)),
        ("models", "every model" if record.models is None else ", ".join(record.models)),
        ("concurrency", "no limit" if record.concurrency is None else str(record.concurrency)),
        ("open tasks", str(open_tasks)),
        ("callback hosts", ", ".join(record.callback_hosts) or "none beyond public ones"),
        ("expires", "never" if record.expires_at is None else _when(record.expires_at)),
        ("created", _when(record.created_at)),
        ("rotated", _when(record.rotated_at)),
        ("revoked", "no" if record.revoked_at is None else _when(record.revoked_at)),
        ("last used", _when(record.last_used_at)),
    ]
    typer.echo(f"key {record.name}")
    for label, value in lines:
        typer.echo(f"  {label + ':':<16} {value}")


@keys_app.command("revoke")
def revoke_command(name: NameArgument, ledger_url: LedgerOption = None, json_out: JsonOption = False) -> None:
    """Revoke a key: every proxy refuses it from the next request on (its name stays taken)."""
    from ..proxy.keys import validate_key_name

    with boundary():
        validate_key_name(name)
    with opened(ledger_url, create=False) as ledger:
        record = ledger.proxy.revoke(name)
        now = ledger.clock()
    if json_out:
        print_json(record.to_dict(now))
        return
    typer.echo(
        f"revoked key {record.name} at {_when(record.revoked_at)}: every proxy refuses it from the next "
        "request on; its charges and budgets stay in the ledger"
    )


@keys_app.command("rotate")
def rotate_command(
    name: NameArgument,
    proxy_url: ProxyUrlOption = DEFAULT_PROXY_URL,
    ledger_url: LedgerOption = None,
    json_out: JsonOption = False,
) -> None:
    """Give a key new credentials (printed once); the old ones are refused from the next request on."""
    from ..proxy.keys import Keys, validate_key_name

    with boundary():
        validate_key_name(name)
    with opened(ledger_url, create=False) as ledger:
        master = _master()
        issued = Keys(ledger, master).rotate(name)
        now = ledger.clock()
    if json_out:
        print_json(_issued_json(issued, master, proxy_url, now))
        return
    _credentials(issued, master, proxy_url, "rotated")
    typer.echo("The old access key, secret key, API key and webhook secret no longer work.")
