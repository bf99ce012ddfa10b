"""The dashboard's ASGI app: one HTML page, its static files and a read-only JSON API."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ..alerts.redact import public_alert
from ..budgets import validate_tz
from ..errors import ConfigurationError, KlingCostError, ValidationError
from ..ledger import Ledger
from ..reports import budget_status, daily_usage, glance, keys_view, latest_charges, overview, report
from ..reports.bill import bill_view
from .access import COOKIE, HostGate, TokenGate, hide_tokens_in_access_log

try:
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # dependencies of the package: only a damaged environment lacks them
    _missing = (exc.name or "jinja2").partition(".")[0]
    raise ConfigurationError(
        f"the dashboard needs {_missing}, a dependency of klingai-cost-controls missing from this "
        f"environment: pip install {_missing}"
    ) from exc

from .openapi import openapi_spec

__all__ = ["create_dashboard_app"]

HERE = Path(__file__).resolve().parent
BREAKDOWNS = ("model", "mode", "project", "key", "user", "kind", "duration", "audio", "status", "scope")


def plotly_js() -> Path:
    """plotly.js as shipped inside the installed ``plotly`` Python package (works offline)."""
    try:
        path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "the dashboard needs plotly, a dependency of klingai-cost-controls missing from this "
            "environment: pip install plotly"
        ) from exc
    if not path.is_file():
        raise ConfigurationError(f"plotly.min.js is missing from the plotly package ({path})")
    return path


def _param(request: Request, name: str) -> str | None:
    """A query parameter; an empty one (``?scope=``, as the README's examples write it) is absent."""
    return request.query_params.get(name) or None


def _int(request: Request, name: str, default: int) -> int:
    raw = _param(request, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer, not {raw!r}") from None


MAX_DAYS = 3660
"""Most days one ``?days=`` covers (the same bound as :func:`~kling_cost.reports.daily_usage`)."""
MAX_ROWS = 1000
"""Most rows one ``/api/charges`` or ``/api/alerts`` call returns."""


def _limit(request: Request, default: int) -> int:
    limit = _int(request, "limit", default)
    if not 1 <= limit <= MAX_ROWS:
        raise ValidationError(f"limit must be between 1 and {MAX_ROWS}, not {limit}")
    return limit


def create_dashboard_app(
    ledger: Ledger,
    token: str | None = None,
    *,
    bound_host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    tz: str = "UTC",
    refresh_seconds: int = 30,
    days: int = 30,
    now: Callable[[], datetime] | None = None,
) -> Any:
    """The dashboard over ``ledger``: ``/`` (the page), ``/api/...`` (JSON), ``/static/...``.

    ``bound_host`` is the address the server listens on: unless it is loopback, every request
    must carry ``token`` (and without a token every request answers 401). Every request must
    name the dashboard in its ``Host`` header: a loopback name, the bound address, or one of
    ``allowed_hosts``; any other answers 421 (see :mod:`.access`). ``now`` defaults to the
    ledger's clock.
    """
    tz = validate_tz(tz)
    if token is not None:
        hide_tokens_in_access_log()  # ?token=T opens the page; the access log must not keep T
    if refresh_seconds < 1:
        raise ValidationError("refresh_seconds must be at least 1")
    clock = now or ledger.clock
    js = plotly_js()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    page = env.get_template("index.html")

    def api(handler: Callable[[Request], Any]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(handler(request), headers={"cache-control": "no-store"})
            except ValidationError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except KlingCostError as exc:
                return JSONResponse({"error": str(exc)}, status_code=503)

        return endpoint

    def _days(request: Request) -> int:
        """``?days=`` as ``/api/overview`` and ``/api/daily`` take it: 1 to 3660."""
        n = _int(request, "days", days)
        if not 1 <= n <= MAX_DAYS:
            raise ValidationError(f"days must be between 1 and {MAX_DAYS}, not {n}")
        return n

    def zone(request: Request) -> str:
        return validate_tz(_param(request, "tz") or tz)

    def index(request: Request) -> Response:
        html = page.render(refresh=refresh_seconds, tz=tz, days=days)
        response = HTMLResponse(html, headers={"cache-control": "no-store"})
        given = request.query_params.get("token")
        if token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode()):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return FileResponse(js, media_type="text/javascript")
        path = HERE / "static" / name
        if "/" in name or not path.is_file():
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(path)

    def favicon(request: Request) -> Response:
        return FileResponse(HERE / "static" / "favicon.ico", media_type="image/x-icon")

    def get_glance(request: Request) -> Any:
        n = _int(request, "days", days)
        return glance(ledger, days=n, tz=zone(request), now=clock()).to_dict()

    def get_overview(request: Request) -> Any:
        return overview(ledger, days=_int(request, "days", days), tz=zone(request), now=clock())

    def get_daily(request: Request) -> Any:
        scope = _param(request, "scope")
        return daily_usage(
            ledger, _int(request, "days", days), scope=scope, tz=zone(request), now=clock()
        ).to_dict()

    def get_report(request: Request) -> Any:
        rep = report(
            ledger,
            _param(request, "by") or "day",
            since=_param(request, "since") or f"{days}d",
            until=_param(request, "until"),
            scope=_param(request, "scope"),
            tz=zone(request),
            now=clock(),
        )
        return rep.to_dict()

    def get_breakdown(request: Request) -> Any:
        dim = request.path_params["dim"]
        if dim not in BREAKDOWNS:
            raise ValidationError(f"no breakdown by {dim!r}; choose from: {', '.join(BREAKDOWNS)}")
        rep = report(ledger, (dim,), since=f"{_days(request)}d", tz=zone(request), now=clock())
        return rep.to_dict()

    def get_drift(request: Request) -> Any:
        rep = report(ledger, ("model", "mode"), since=f"{_days(request)}d", tz=zone(request), now=clock())
        return rep.to_dict()

    def get_charges(request: Request) -> Any:
        found = latest_charges(ledger, _limit(request, 50), scope=_param(request, "scope"))
        return {"charges": [c.to_dict() for c in found]}

    def get_alerts(request: Request) -> Any:
        found = ledger.alerts(
            status=_param(request, "status"), scope=_param(request, "scope"), limit=_limit(request, 100)
        )
        return {"alerts": with_units([public_alert(a.to_dict()) for a in found])}

    def with_units(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each alert's amounts are in its budget's unit (None when the budget is gone)."""
        units = {b.id: b.unit for b in ledger.budgets()} if alerts else {}
        for alert in alerts:
            if alert.get("unit") is None:
                alert["unit"] = alert["details"].get("unit") or units.get(alert["budget_id"])
        return alerts

    def get_budgets(request: Request) -> Any:
        zone(request)  # still validated
        return {"budgets": [budget_status(u) for u in ledger.usages(at=clock())]}

    def get_keys(request: Request) -> Any:
        return keys_view(ledger, now=clock())

    def get_bill(request: Request) -> Any:
        return bill_view(ledger, clock(), tz=zone(request))

    def get_openapi(request: Request) -> Any:
        return openapi_spec()

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/favicon.ico", favicon),
        Route("/api/openapi.json", api(get_openapi)),
        Route("/api/overview", api(get_overview)),
        Route("/api/glance", api(get_glance)),
        Route("/api/budgets", api(get_budgets)),
        Route("/api/daily", api(get_daily)),
        Route("/api/report", api(get_report)),
        Route("/api/breakdown/{dim}", api(get_breakdown)),
        Route("/api/drift", api(get_drift)),
        Route("/api/charges", api(get_charges)),
        Route("/api/alerts", api(get_alerts)),
        Route("/api/keys", api(get_keys)),
        Route("/api/bill", api(get_bill)),
    ]
    app = Starlette(routes=routes)
    gated = TokenGate(app, token=token, bound_host=bound_host)
    return HostGate(gated, bound_host=bound_host, allowed_hosts=allowed_hosts)
