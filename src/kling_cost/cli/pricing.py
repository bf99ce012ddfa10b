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
            help="Endpoint: text2video, image2video, multi-image2video, omni-video, motion-control, "
            "video-extend, lip-sync, advanced-lip-sync, effects, avatar, text-to-audio, video-to-audio, "
            "image, multi-image2image, omni-image, tryon; or a new-standard path such as "
            "/text-to-video/kling-3.0 (its model is the path's).",
        ),
    ] = "text2video",
    model: Annotated[
        str | None,
        typer.Option("--model", help="model_name or new-standard model id (default: the catalog's default)."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="std/pro/4k (or standard/professional). Default std.")
    ] = None,
    resolution: Annotated[
        str | None,
        typer.Option(
            "--resolution",
            help="Instead of --mode: 720p (std), 1080p (pro) or 4k; images: 1k, 2k or 4k.",
        ),
    ] = None,
    duration: Annotated[
        int | None,
        typer.Option("--duration", help="Seconds (video default 5; motion control: the output, at most 30)."),
    ] = None,
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Generate sound (sound=on).")] = False,
    sound: Annotated[
        str | None,
        typer.Option(
            "--sound",
            metavar="native|original|off",
            help="The new standard's settings.audio (native = --audio; original keeps an input "
            "video's sound, which is not generated sound).",
        ),
    ] = None,
    video_input: Annotated[
        bool, typer.Option("--video-input", help="A reference video (omni-video: 3.0 Omni, O1).")
    ] = False,
    voice_control: Annotated[
        bool, typer.Option("--voice-control", help="Voices given to kling-2.6 (with --audio).")
    ] = False,
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
            resolution=resolution,
            duration=duration,
            audio=_audio(audio, sound),
            n=n,
            image_input=image_input,
            video_input=video_input,
            voice_control=voice_control,
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


def _audio(flag: bool, sound: str | None) -> object:
    """``--audio`` or ``--sound VALUE``; both given must agree."""
    if sound is None:
        return flag
    from ..errors import PricingError
    from ..pricing.request import PriceRequest

    value = PriceRequest.build(audio=sound).audio  # checks the value: on, off, native, original
    if flag and not value:
        raise PricingError(
            f"--audio and --sound {sound} disagree; give one of them",
            field="sound",
            value=sound,
            allowed=("native",),
        )
    return value


def _with(entry: PriceEntry) -> str:
    """The entry's other match fields, in a few words: ``1k/2k``, ``video input``, ``no voice control``."""
    parts = ["/".join(entry.resolutions)] if entry.resolutions else []
    for flag, text in (
        (entry.image_input, "image input"),
        (entry.video_input, "video input"),
        (entry.voice_control, "voice control"),
        (entry.multi_image, "multi-image"),
    ):
        if flag is not None:
            parts.append(text if flag else f"no {text}")
    return ", ".join(parts)


def _seconds(durations: tuple[int, ...] | None) -> str:
    """``5/10``, or a run of whole seconds as ``3-15``."""
    if not durations:
        return ""
    run = list(range(durations[0], durations[-1] + 1))
    if len(durations) > 2 and list(durations) == run:
        return f"{durations[0]}-{durations[-1]}"
    return "/".join(map(str, durations))


def _entry_row(cat: Catalog, entry: PriceEntry) -> dict[str, Any]:
    usd = cat.usd_per_unit.get(entry.pack)
    return {
        "kind": entry.kind,
        "models": list(entry.models) if entry.models else None,
        "modes": list(entry.modes) if entry.modes else None,
        "audio": entry.audio,
        "image_input": entry.image_input,
        "resolutions": list(entry.resolutions) if entry.resolutions else None,
        "video_input": entry.video_input,
        "voice_control": entry.voice_control,
        "multi_image": entry.multi_image,
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
    columns = ["kind", "model", "mode", "audio", "with", "seconds", "price", "USD", "from"]
    for col in [*columns, "source"] if sources else columns:
        table.add_column(col, overflow="fold", no_wrap=col == "from")
    for entry, row in zip(entries, rows, strict=True):
        cells = [
            entry.kind,
            ", ".join(entry.models) if entry.models else "any",
            "/".join(entry.modes) if entry.modes else "any",
            "yes" if entry.audio else "",
            _with(entry),
            _seconds(entry.durations),
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
