"""``kling-cost packs``: every resource pack, what it is worth and what will expire unused."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import CatalogOption, JsonOption, LedgerOption, boundary, console, fail, print_json

if TYPE_CHECKING:
    from ..bill.packs import PackSnapshot
    from ..ledger import Ledger

BaseUrlOption = Annotated[
    str | None,
    typer.Option("--base-url", envvar="KLING_BASE_URL", help="Kling API base URL (default: Kling's global)."),
]
PackTypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--type",
        metavar="PACK=TYPE",
        help="The type (video, image, tryon) of a pack whose name does not say it, by id or name; "
        "repeatable.",
        show_default=False,
    ),
]


def _types(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        pack, sep, kind = value.rpartition("=")
        if not sep or not pack or kind not in ("video", "image", "tryon"):
            fail(f"--type {value!r}: use PACK=video|image|tryon (PACK: a pack's id or name)")
        out[pack] = kind
    return out


@contextmanager
def _opened(ledger_url: str | None) -> Iterator[Ledger]:
    from ..ledger import open_ledger

    with boundary():
        ledger = open_ledger(ledger_url)
        try:
            yield ledger
        finally:
            ledger.close()


def fresh_snapshot(
    ledger: Ledger, base_url: str | None, catalog: str | None, types: dict[str, str] | None = None
) -> PackSnapshot:
    """Ask Kling (through the shared 1 call/s limit) and save the snapshot in the ledger."""
    from ..bill.packs import take_snapshot
    from ..kling import KlingClient

    with boundary(), KlingClient(base_url=base_url) as client:
        return take_snapshot(client, ledger, catalog=catalog or "kling-api", pack_types=types)


def packs_command(
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Also set again the budgets kept from packs (budget set --from-packs)."
        ),
    ] = False,
    types: PackTypeOption = None,
    base_url: BaseUrlOption = None,
    ledger_url: LedgerOption = None,
    catalog: CatalogOption = None,
    json_out: JsonOption = False,
) -> None:
    """Every resource pack: remaining, USD left, expiry, and units that will expire unused.

    Lists every pack still valid (the query window reaches 400 days back), at most one
    /account/costs call per second across processes sharing the ledger. Kling's remaining
    figure can lag its charges by up to 12 h. "At risk": units a pack will still hold when it
    expires at its type's burn rate (the ledger's last 7 days), spent against the packs in
    expiry order."""
    from ..bill.pack_budgets import refresh_pack_budgets

    pack_types = _types(types)
    with _opened(ledger_url) as ledger:
        snap = fresh_snapshot(ledger, base_url, catalog, pack_types)
        budgets = []
        if refresh:
            with boundary():
                budgets = refresh_pack_budgets(ledger, snap)
    if json_out:
        print_json(snap.to_dict() | ({"budgets": [b.to_dict() for b in budgets]} if refresh else {}))
        return
    _table(snap)
    for b in budgets:
        console.print(
            f"budget {b.scope} lifetime: limit {b.limit} units (used {b.used} + {b.pack_type} packs "
            f"{b.packs_remaining} - charged in the last 12 h {b.charged_recently})",
            markup=False,
        )


def _table(snap: PackSnapshot) -> None:
    from rich.table import Table

    table = Table(title=f"Resource packs at {snap.taken_at:%Y-%m-%d %H:%M} UTC")
    for column in (
        "type",
        "name",
        "remaining / total",
        "USD left",
        "expires",
        "days left",
        "at risk",
        "status",
    ):
        table.add_column(
            column, justify="right" if column in ("USD left", "days left", "at risk") else "left"
        )
    for p in snap.packs:
        lag = f" (-{p.charged_recently} charged < 12 h)" if p.charged_recently else ""
        table.add_row(
            p.pack_type,
            p.name,
            f"{p.remaining} / {p.total}*{lag}",
            "-" if p.usd_left is None else f"${p.usd_left}",
            "-" if p.invalid_time is None else f"{p.invalid_time:%Y-%m-%d %H:%M}",
            "-" if p.days_left is None else str(p.days_left),
            f"lost {p.units_lost}" if p.status == "expired" else str(p.units_at_risk),
            p.status,
        )
    console.print(table)
    if not snap.packs:
        console.print("no resource packs in the window (400 days back to tomorrow)")
    rates = ", ".join(f"{k} {v}/day" for k, v in snap.burn_per_day.items())
    console.print(
        f"* remaining_quantity can lag Kling's charges by up to 12 h. Burn rate (last 7 days): {rates}.",
        markup=False,
    )
