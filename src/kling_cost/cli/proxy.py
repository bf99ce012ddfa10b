"""``kling-cost proxy``: the Kling-compatible budget proxy."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import LedgerOption, boundary, console, error_text, fail

if TYPE_CHECKING:
    import socket


def proxy_command(
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            envvar="KLING_BASE_URL",
            help="Kling's base URL (default: $KLING_BASE_URL, else https://api-singapore.klingai.com).",
            show_default=False,
        ),
    ] = None,
    ledger_url: LedgerOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8788,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.", min=1, max=64)] = 1,
    ssl_certfile: Annotated[
        str | None, typer.Option("--ssl-certfile", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    ssl_keyfile: Annotated[
        str | None, typer.Option("--ssl-keyfile", help="The certificate's key (PEM).")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            help="This proxy's URL as Kling reaches it: creates then ask Kling for callbacks at "
            "<URL>/_kling_cost/callback. Without it the proxy polls its open tasks.",
        ),
    ] = None,
    callback_secret_env: Annotated[
        str | None,
        typer.Option(
            "--callback-secret-env",
            metavar="VAR",
            help="Name of the environment variable holding Kling's webhook secret: callbacks "
            "without a valid signature are refused.",
        ),
    ] = None,
    metrics_token_env: Annotated[
        str | None,
        typer.Option(
            "--metrics-token-env",
            metavar="VAR",
            help="Name of the environment variable holding a token that /metrics then asks for "
            "(Authorization: Bearer <token>). Without it /metrics is open to whoever reaches the proxy.",
        ),
    ] = None,
    allow_unpriced: Annotated[
        bool,
        typer.Option(
            "--allow-unpriced",
            help="Pass paths the proxy cannot price or filter through to Kling (default: refused, 404/1202).",
        ),
    ] = False,
    allow_callback_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-callback-host",
            help="Accept client callback URLs on this host although it resolves to a private or "
            "loopback address (repeatable).",
        ),
    ] = None,
    max_body_mb: Annotated[
        int,
        typer.Option("--max-body-mb", help="Largest request body, in MiB (Kling's 1200/413 above).", min=1),
    ] = 50,
    upstream_timeout: Annotated[
        float, typer.Option("--upstream-timeout", help="Seconds to wait for Kling's answer.", min=1)
    ] = 60.0,
    client_timeout: Annotated[
        float,
        typer.Option(
            "--client-timeout", help="Seconds a client has to send its request body (408 after).", min=1
        ),
    ] = 60.0,
    settle_interval: Annotated[
        float, typer.Option("--settle-interval", help="Seconds between polls of the open tasks.", min=0.1)
    ] = 15.0,
) -> None:
    """Run the Kling-compatible budget proxy: tools change only their base URL and key.

    Every create is priced and reserved on its virtual key's scopes and the account before it
    is sent with the real credentials (KLING_ACCESS_KEY/KLING_SECRET_KEY, KLING_API_KEY for the
    new standard), and settled once. Keys: kling-cost keys create.
    """
    from ._serving import listen, require_server, url_host

    require_server("the proxy")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("--ssl-certfile and --ssl-keyfile go together; give both or neither")
    if ssl_certfile is not None and ssl_keyfile is not None:
        _check_tls(ssl_certfile, ssl_keyfile)
    _log_level()
    from ..kling.endpoints import BASE_URLS
    from ..ledger import default_ledger_url
    from ..proxy.keys import MasterKey
    from ..proxy.server import ENV_CONFIG, ProxyConfig, metrics_token_from_env

    config = ProxyConfig(
        upstream=(upstream or BASE_URLS["global"]).rstrip("/"),
        ledger=ledger_url or default_ledger_url(),
        public_url=public_url,
        callback_secret_env=callback_secret_env,
        metrics_token_env=metrics_token_env,
        allow_unpriced=allow_unpriced,
        allow_callback_hosts=tuple(allow_callback_host or ()),
        max_body_bytes=max_body_mb * 1024 * 1024,
        upstream_timeout=upstream_timeout,
        settle_interval=settle_interval,
        client_timeout=client_timeout,
    )
    if callback_secret_env and not os.environ.get(callback_secret_env):
        fail(f"--callback-secret-env {callback_secret_env}: that environment variable is not set")
    if metrics_token_env is not None:  # "" too: a shell variable meant to hold the name was unset
        with boundary():
            metrics_token_from_env(metrics_token_env)
    with boundary():
        # a missing or unreadable master key is one line now, not per request; never a new one
        # (the keys were made with another: their JWTs and webhook secrets would all fail)
        MasterKey.load(create=False)
        from ..ledger import open_ledger

        open_ledger(config.ledger).close()  # a broken URL fails here, before listening
        from ..errors import MissingCredentials
        from ..kling.auth import resolve_auth

        try:
            resolve_auth()  # the real credentials must be in the environment
        except MissingCredentials as exc:
            fail(error_text(exc).replace("--base-url", "--upstream"))
    sock = listen(host, port)
    scheme = "https" if ssl_certfile else "http"
    console.print(
        f"kling-cost proxy on {scheme}://{url_host(host)}:{sock.getsockname()[1]} -> {config.upstream} "
        f"({workers} worker{'s' if workers > 1 else ''})",
        markup=False,
    )
    console.file.flush()
    os.environ[ENV_CONFIG] = config.to_env()
    if workers > 1:  # every worker counts into one directory; /metrics sums them
        from ..proxy.metrics import prepare_multiprocess_dir, remove_multiprocess_dir

        shared = prepare_multiprocess_dir()
        try:
            _serve(sock, workers, ssl_certfile, ssl_keyfile)
        finally:
            remove_multiprocess_dir(shared)
        return
    _serve(sock, workers, ssl_certfile, ssl_keyfile)


def _check_tls(certfile: str, keyfile: str) -> None:
    """One line and exit 2, before anything listens, when the certificate and key cannot serve."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except OSError as exc:  # ssl.SSLError too: not PEM, or a key of another certificate
        reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
        fail(f"--ssl-certfile {certfile} / --ssl-keyfile {keyfile} cannot serve HTTPS: {reason}")


def _log_level() -> str:
    """``KLING_COST_LOG_LEVEL`` (default ``warning``), or one line and exit 2 when uvicorn has
    no such level."""
    from uvicorn.config import LOG_LEVELS

    level = os.environ.get("KLING_COST_LOG_LEVEL", "warning").strip().lower()
    if level not in LOG_LEVELS:
        fail(f"KLING_COST_LOG_LEVEL {level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
    return level


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the proxy's own loggers (the access log ``kling_cost.proxy.access``
    among them) at ``level`` on uvicorn's stderr handler: without a handler nothing below a
    warning was ever written."""
    import copy

    from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    own = {"handlers": ["default"], "level": LOG_LEVELS[level], "propagate": False}
    config["loggers"]["kling_cost"] = own
    return config


def _serve(sock: socket.socket, workers: int, certfile: str | None, keyfile: str | None) -> None:
    import uvicorn

    from ._common import EXIT_ERROR

    level = _log_level()
    config = uvicorn.Config(
        "kling_cost.proxy.server:app_from_env",
        factory=True,
        workers=workers,
        log_level=level,
        log_config=_log_config(level),
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            import inspect

            from uvicorn.supervisors import Multiprocess

            if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before 0.30
                Multiprocess(config, target=server.run, sockets=[sock]).run()  # type: ignore[call-arg, unused-ignore]
            else:
                Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    finally:
        sock.close()
    if workers == 1 and not server.started and not server.should_exit:
        fail("the proxy stopped before it started; set KLING_COST_LOG_LEVEL=info to see why", EXIT_ERROR)
