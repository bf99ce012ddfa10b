"""``kling-cost simulate``: run the Kling-compatible simulator on loopback."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ._common import console, fail


def simulate_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8790,
    access_key: Annotated[
        str | None,
        typer.Option("--access-key", help="Access key (default: $KLING_ACCESS_KEY, else generated)."),
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option("--secret-key", help="Secret key (default: $KLING_SECRET_KEY, else generated)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="Also accept this bearer API key (default: $KLING_API_KEY)."),
    ] = None,
    task_seconds: Annotated[
        float, typer.Option("--task-seconds", help="Seconds from submit to the task's end.", min=0)
    ] = 2.0,
    failure_rate: Annotated[
        float, typer.Option("--failure-rate", help="Share of tasks that fail (cost 0).", min=0, max=1)
    ] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the failure draws.")] = 1,
    video_units: Annotated[str, typer.Option("--video-units", help="Units in the video pack.")] = "1000",
    image_units: Annotated[str, typer.Option("--image-units", help="Units in the image pack.")] = "1000",
    tryon_units: Annotated[str, typer.Option("--tryon-units", help="Units in the try-on pack.")] = "100",
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Parallel tasks per model version and pack type.", min=1)
    ] = 5,
    callback_secret: Annotated[
        str | None, typer.Option("--callback-secret", help="Sign callbacks (Standard Webhooks) with this.")
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", help="At most this many creates per second (1302).", min=1)
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin/--no-admin", help="Serve /_simulator/ fault injection routes.")
    ] = True,
    balance: Annotated[
        str | None,
        typer.Option(
            "--balance",
            help="A cash balance (USD) that pays tasks their pack cannot; default: none (1102 instead).",
        ),
    ] = None,
    costs_lag: Annotated[
        str,
        typer.Option(
            "--costs-lag",
            help="/account/costs answers remaining_quantity as it was this long ago (30s, 15m, 12h, 1d).",
        ),
    ] = "0s",
) -> None:
    """Run a Kling-compatible API simulator (endpoints, auth, packs, billing, callbacks)."""
    import secrets

    from ..errors import ValidationError
    from ._serving import listen, require_server, run_server, url_host

    require_server("the simulator")
    from ..simulator import create_app
    from ..simulator.state import pack_units

    try:
        units = {
            k: pack_units(v)
            for k, v in (("video", video_units), ("image", image_units), ("tryon", tryon_units))
        }
    except ValidationError as exc:
        fail(f"--video-units, --image-units and --tryon-units: {exc}")
    lag = _span(costs_lag)
    if lag is None:
        fail(f"--costs-lag {costs_lag!r}: use a number of s, m, h or d (e.g. 12h), at most 30d")
    ak = access_key or os.environ.get("KLING_ACCESS_KEY")
    sk = secret_key or os.environ.get("KLING_SECRET_KEY")
    generated = not (ak and sk)
    if generated:
        ak = ak or f"ak-{secrets.token_hex(8)}"
        sk = sk or secrets.token_urlsafe(24)
    key = api_key or os.environ.get("KLING_API_KEY")
    try:
        app = create_app(
            ak,
            sk,
            api_key=key,
            task_seconds=task_seconds,
            failure_rate=failure_rate,
            seed=seed,
            video_units=units["video"],
            image_units=units["image"],
            tryon_units=units["tryon"],
            concurrency=concurrency,
            callback_secret=callback_secret,
            rate_limit=rate_limit,
            admin=admin,
            balance=balance,
            costs_lag=lag,
        )
    except ValidationError as exc:  # settings the simulator cannot run with (infinite task seconds)
        fail(str(exc))
    sock = listen(host, port)
    console.print(f"Kling simulator on http://{url_host(host)}:{sock.getsockname()[1]}", markup=False)
    if generated:
        console.print(f"access key: {ak}\nsecret key: {sk}", markup=False)
    else:
        console.print(f"access key: {ak} (secret key from the command line or environment)", markup=False)
    console.file.flush()
    run_server(app, sock)


_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _span(text: str) -> int | None:
    """``12h`` -> 43200 (seconds); None when it is not a whole number of s/m/h/d up to 30 days."""
    value = text.strip().lower()
    number, unit = value[:-1], value[-1:]
    if unit not in _SPAN_UNITS or not number.isdigit() or len(number) > 9:
        return None
    seconds = int(number) * _SPAN_UNITS[unit]
    return seconds if seconds <= 30 * 86_400 else None
