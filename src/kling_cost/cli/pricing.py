"""``kling-cost estimate`` and ``kling-cost pricing show|validate``."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..money import format_amount, format_quantity
from ._common import CatalogOption, JsonOption, boundary, console, parse_date, print_json
from ._typer import App

if TYPE_CHECKING:
    from ..pricing import Catalog, PriceEntry

pricing_app = App(help="Show and validate price catalogs.", no_args_is_help=True)


def estimate_command(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="Endpoint: text2video, image2video, multi-image2video, video-extend, lip-sync, "
            "effects, image, tryon.",
        ),
    ] = "text2video",
    model: Annotated[
        str | None, typer.Option("--model", help="model_name (default: the catalog's default).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="std/pro (or standard/professional).")] = "std",
    duration: Annotated[int | None, typer.Option("--duration", help="Seconds (video default 5).")] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Generate sound (sound=on).")] = False,
    n: Annotated[int, typer.Option("--n", help="Number of images (image generation).")] = 1,
    image_input: Annotated[
        bool, typer.Option("--image-input", help="Image generation from a reference image.")
    ] = False,
    effect: Annotated[str | None, typer.Option("--effect", help="effect_scene (effects).")] = None,
    count: Annotated[int, typer.Option("--count", help="How many such requests.", min=1)] = 1,
    catalog: CatalogOption = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", metavar="DATE", help="Price with the entries in force on this date."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Estimate what a request will cost, before anything is sent."""
    from ..pricing import estimate

    day = parse_date(as_of, "--as-of")
    with boundary():
        est = estimate(
            kind=kind,
            model=model,
            mode=mode,
            duration=duration,
            audio=audio,
            n=n,
            image_input=image_input,
            effect=effect,
            catalog=catalog,
            as_of=day,
        )
    total = est.amount * count
    usd_total = None if est.usd is None else est.usd * count
    if json_out:
        data = est.to_dict()
        if count != 1:
            data["count"] = count
            data["total"] = format_amount(total)
            data["total_usd"] = None if usd_total is None else format(usd_total.normalize(), "f")
        print_json(data)
        return
    # Plain lines (bold on a terminal): run in loops, estimate answers without loading rich.
    line = est.breakdown[0]
    usd = "" if est.usd is None else f" (USD {format(est.usd.normalize(), 'f')})"
    amount = typer.style(f"{format_quantity(est.amount, est.unit)}", bold=True)
    typer.echo(f"{amount}{usd}  {est.request.endpoint} {est.request.label()}")
    typer.echo(
        f"  {line.rate} x {line.quantity} ({line.basis}) from {est.catalog}, "
        f"in force since {line.effective_from}: {line.source}"
    )
    if count != 1:
        usd_t = "" if usd_total is None else f" (USD {format(usd_total.normalize(), 'f')})"
        total_text = typer.style(f"{format_quantity(total, est.unit)}", bold=True)
        typer.echo(f"  x {count} requests = {total_text}{usd_t}")


def _entry_row(cat: Catalog, entry: PriceEntry) -> dict[str, Any]:
    usd = cat.usd_per_unit.get(entry.pack)
    return {
        "kind": entry.kind,
        "models": list(entry.models) if entry.models else None,
        "modes": list(entry.modes) if entry.modes else None,
        "audio": entry.audio,
        "image_input": entry.image_input,
        "durations": list(entry.durations) if entry.durations else None,
        "basis": entry.basis,
        "rate": str(entry.rate),
        "block_seconds": entry.block_seconds,
        "unit": cat.unit,
        "pack": entry.pack,
        "usd_rate": None if usd is None else format((entry.rate * usd).normalize(), "f"),
        "effective_from": entry.effective_from.isoformat(),
        "source": entry.source,
    }


@pricing_app.command("show")
def show_command(
    catalog: CatalogOption = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Every dated version of every price, not just today's.")
    ] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", metavar="DATE", help="Show the prices in force on this date.")
    ] = None,
    sources: Annotated[bool, typer.Option("--sources", help="Add each price's source.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Show a catalog's prices (those in force today, or --all versions)."""
    from rich.table import Table

    from ..pricing import load_catalog

    day = parse_date(as_of, "--as-of") or date.today()
    with boundary():
        cat = load_catalog(catalog)
    entries = [e for group in cat.versions() for e in group] if all_versions else cat.current(day)
    rows = [_entry_row(cat, e) for e in entries]
    if json_out:
        print_json(
            {
                "name": cat.name,
                "unit": cat.unit,
                "description": cat.description,
                "usd_per_unit": {k: str(v) for k, v in cat.usd_per_unit.items()},
                "as_of": None if all_versions else day.isoformat(),
                "prices": rows,
            }
        )
        return
    title = f"{cat.name} ({cat.unit})" + ("" if all_versions else f" in force on {day}")
    table = Table(title=title)
    columns = ["kind", "model", "mode", "audio", "seconds", "price", "USD", "from"]
    for col in [*columns, "source"] if sources else columns:
        table.add_column(col, overflow="fold", no_wrap=col == "from")
    for entry, row in zip(entries, rows, strict=True):
        cells = [
            entry.kind,
            ", ".join(entry.models) if entry.models else "any",
            "/".join(entry.modes) if entry.modes else "any",
            "yes" if entry.audio else "",
            "/".join(map(str, entry.durations)) if entry.durations else "",
            entry.rate_text(),
            row["usd_rate"] or "",
            row["effective_from"],
        ]
        table.add_row(*cells, *([entry.source] if sources else []))
    console.print(table)
    if cat.usd_per_unit:
        rates = ", ".join(f"{k} ${v}" for k, v in cat.usd_per_unit.items())
        console.print(f"USD per {cat.unit[:-1]}: {rates}")


@pricing_app.command("validate")
def validate_command(
    path: Annotated[str, typer.Argument(metavar="FILE", help="Catalog TOML file to check (- for stdin).")],
    json_out: JsonOption = False,
) -> None:
    """Check a catalog file; prints what is wrong (file, line/key) or a summary."""
    from ..pricing import load_catalog, parse_catalog

    with boundary():
        if path == "-":
            cat = parse_catalog(typer.get_text_stream("stdin").read(), origin="<stdin>")
        else:
            cat = load_catalog(path)
    if json_out:
        print_json({"valid": True, "name": cat.name, "unit": cat.unit, "entries": len(cat.entries)})
        return
    console.print(f"OK: {cat.name} ({cat.unit}), {len(cat.entries)} price entries")
