"""The simulator's ASGI app: Kling's routes, envelope and error answers, plus a small admin API."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import KlingAPIError, ValidationError
from ..kling.limits import BodyLimits, read_json_body
from ..money import json_exact
from ..pricing import Catalog
from ..pricing.standard import NEW_FAMILIES
from .auth import Authenticator
from .billing import Balance
from .callbacks import CallbackSender
from .clock import Clock, SystemClock
from .errors import SimError
from .state import PACK_TYPES, SimulatorState, pack_units

__all__ = ["ENDPOINT_ROUTES", "NEW_ROUTES", "Simulator", "create_app"]

ENDPOINT_ROUTES: dict[str, str] = {
    "/v1/videos/text2video": "text2video",
    "/v1/videos/image2video": "image2video",
    "/v1/videos/multi-image2video": "multi-image2video",
    "/v1/videos/video-extend": "video-extend",
    "/v1/videos/lip-sync": "lip-sync",
    "/v1/videos/effects": "effects",
    "/v1/images/generations": "image",
    "/v1/images/kolors-virtual-try-on": "tryon",
    "/v1/videos/omni-video": "omni-video",
    "/v1/videos/advanced-lip-sync": "advanced-lip-sync",
}
"""Legacy create paths (query ``<path>/{id}``, list ``<path>?pageNum&pageSize``); JWT or API key."""

NEW_ROUTES = tuple(f"/{family}/{{model}}" for family in NEW_FAMILIES)
"""New-standard create paths (model in the path); API key only, like ``/tasks`` and
``/account/billing/...``."""


def render(payload: object) -> bytes:
    """JSON with Decimals written as exact JSON numbers (never through a float)."""
    return json_exact(payload).encode()


class Simulator:
    """A simulated Kling account and how to reach it: state, auth, callbacks.

    Tests hold this object (``app.state.simulator``) to move a manual clock, inject faults
    (:meth:`SimulatorState.inject`), force failures and read the callback deliveries.
    """

    def __init__(
        self,
        *,
        access_key: str,
        secret_key: str,
        api_key: str | None = None,
        task_seconds: float = 2.0,
        failure_rate: float = 0.0,
        seed: int | None = 1,
        video_units: Decimal | int | str = 1000,
        image_units: Decimal | int | str = 1000,
        tryon_units: Decimal | int | str = 100,
        concurrency: int | Mapping[str, int] = 5,
        clock: Clock | None = None,
        auth_clock: Callable[[], float] | None = None,
        callback_secret: str | None = None,
        rate_limit: int | None = None,
        blocked_terms: tuple[str, ...] = (),
        pack_days: int = 365,
        result_base_url: str = "https://cdn.kling-simulator.invalid",
        catalog: Catalog | str = "kling-api",
        tick: float = 0.05,
        admin: bool = True,
        limits: BodyLimits | None = None,
        balance: Decimal | int | str | None = None,
        balance_currency: str = "USD",
        balance_discount: Decimal | str = "0",
        motion_seconds: Decimal | str = "10.04",
        api_key_name: str = "default",
        costs_lag: timedelta | float = 0,
    ) -> None:
        """``costs_lag`` (a timedelta or seconds): how far behind ``/account/costs`` answers
        ``remaining_quantity`` (Kling's lags by up to 12 h); per-task deductions stay timely."""
        self.clock: Clock = clock or SystemClock()
        self.state = SimulatorState(
            clock=self.clock,
            task_seconds=task_seconds,
            failure_rate=failure_rate,
            seed=seed,
            units={
                "video": pack_units(video_units),
                "image": pack_units(image_units),
                "tryon": pack_units(tryon_units),
            },
            concurrency=concurrency,
            pack_days=pack_days,
            rate_limit=rate_limit,
            blocked_terms=blocked_terms,
            result_base_url=result_base_url,
            catalog=catalog,
            balance=_balance(balance, balance_currency, balance_discount),
            motion_seconds=motion_seconds,
            costs_lag_ms=_lag_ms(costs_lag),
        )
        self.auth = Authenticator(
            access_key,
            secret_key,
            (api_key,) if api_key else (),
            auth_clock or time.time,
            key_names=(api_key_name,),
        )
        self.callbacks = CallbackSender(callback_secret)
        self.tick = tick
        self.admin = admin
        self.limits = limits or BodyLimits()
        """Largest body and deepest JSON accepted (:mod:`kling_cost.kling.limits`)."""

    async def pump(self, client: httpx.AsyncClient) -> None:
        """Move tasks whose time has come and deliver the callbacks that queues."""
        self.state.refresh()
        for event in self.state.drain_outbox():
            await self.callbacks.deliver(client, event)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as client:

            async def loop() -> None:
                while True:
                    await self.pump(client)
                    await asyncio.sleep(self.tick)

            runner = asyncio.create_task(loop())
            try:
                yield
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner


def _lag_ms(lag: timedelta | float) -> int:
    seconds = lag.total_seconds() if isinstance(lag, timedelta) else lag
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 30 * 86_400:
        raise ValidationError(f"costs_lag {lag!r} must be from 0 to 30 days")
    return int(seconds * 1000)


def _balance(amount: Decimal | int | str | None, currency: str, discount: Decimal | str) -> Balance | None:
    """The account's cash balance, or ``None`` (packs only: an empty pack answers 1102)."""
    if amount is None:
        return None
    try:
        value, off = Decimal(amount), Decimal(discount)
    except ArithmeticError:
        raise ValidationError(
            f"balance {amount!r} and balance_discount {discount!r} must be numbers"
        ) from None
    if not value.is_finite() or value < 0 or not off.is_finite() or not 0 <= off < 1:
        raise ValidationError(
            f"balance {amount} must be >= 0 and balance_discount {discount} from 0 to below 1"
        )
    return Balance(value, currency, off)


def _answer(data: object, status: int = 200) -> Response:
    body = {"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": data}
    return Response(render(body), status_code=status, media_type="application/json")


def _error(exc: SimError) -> Response:
    request_id = uuid.uuid4().hex
    body = {"code": exc.code, "message": exc.message, "request_id": request_id, "data": None}
    return Response(
        render(body),
        status_code=exc.http_status,
        media_type="application/json",
        headers={"x-request-id": request_id},
    )


Handler = Callable[[Request], Awaitable[Response]]


def _kling(
    sim: Simulator, scope: str, handler: Callable[[Request], Awaitable[object]], *, api_key_only: bool = False
) -> Handler:
    """Wrap a handler: auth (the caller's key name in ``request.state.key_name``), injected
    faults, envelope, error answers."""

    async def endpoint(request: Request) -> Response:
        try:
            header = request.headers.get("authorization")
            request.state.key_name = sim.auth.check(header, api_key_only=api_key_only)
            if scope != "admin":
                sim.state.take_fault(scope)
            return _answer(await handler(request))
        except SimError as exc:
            return _error(exc)

    return endpoint


async def _json_body(request: Request, limits: BodyLimits) -> object:
    """The body as JSON within ``limits``: too large 1200/413, not JSON or too deep 1200/400."""
    try:
        return await read_json_body(
            request.stream(), content_length=request.headers.get("content-length"), limits=limits
        )
    except KlingAPIError as exc:
        raise SimError(exc.code or 1200, exc.message, http_status=exc.http_status) from None


def _int_param(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise SimError(1201, f"{name} is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise SimError(1201, f"{name} {raw!r} is not a whole number") from None


def _routes(sim: Simulator) -> list[Route]:
    state = sim.state
    routes: list[Route] = []
    for path, kind in ENDPOINT_ROUTES.items():

        async def create(request: Request, kind: str = kind) -> object:
            return state.submit(kind, await _json_body(request, sim.limits), request.state.key_name)

        async def listing(request: Request, kind: str = kind) -> object:
            return state.list_tasks(
                kind, _int_param(request, "pageNum", 1), _int_param(request, "pageSize", 30)
            )

        async def query(request: Request, kind: str = kind) -> object:
            return state.get(kind, request.path_params["ident"])

        routes.append(Route(path, _kling(sim, "create", create), methods=["POST"]))
        routes.append(Route(path, _kling(sim, "query", listing), methods=["GET"]))
        routes.append(Route(path + "/{ident}", _kling(sim, "query", query), methods=["GET"]))

    async def costs(request: Request) -> object:
        name = request.query_params.get("resource_pack_name") or None
        return state.costs(_int_param(request, "start_time"), _int_param(request, "end_time"), name)

    routes.append(Route("/account/costs", _kling(sim, "query", costs), methods=["GET"]))

    async def identify_face(request: Request) -> object:
        return state.identify_face(await _json_body(request, sim.limits))

    routes.append(Route("/v1/videos/identify-face", _kling(sim, "create", identify_face), methods=["POST"]))
    routes.extend(_new_routes(sim))
    if sim.admin:
        routes.extend(_admin_routes(sim))
    return routes


async def _optional_body(request: Request, limits: BodyLimits) -> object:
    """A listing's body: none at all is ``{}`` (every default)."""
    if request.headers.get("content-length") in ("0", None) and not await request.body():
        return {}
    return await _json_body(request, limits)


def _new_routes(sim: Simulator) -> list[Route]:
    """The new standard: creates with the model in the path, ``/tasks``, the billing listings.
    API key only (an AK/SK token is refused with 1000)."""
    state = sim.state
    routes: list[Route] = []
    for family, (_, models) in NEW_FAMILIES.items():

        async def create(request: Request, family: str = family, models: tuple[str, ...] = models) -> object:
            model = request.path_params["model"]
            if model not in models:
                raise SimError(
                    1203, f"model {model} is not served at /{family}/; models: {', '.join(models)}"
                )
            body = await _json_body(request, sim.limits)
            return state.submit_new(family, model, body, request.state.key_name)

        routes.append(
            Route(f"/{family}/{{model}}", _kling(sim, "create", create, api_key_only=True), methods=["POST"])
        )

    async def by_ids(request: Request) -> object:
        ids, external = request.query_params.get("task_ids"), request.query_params.get("external_task_ids")
        if (ids is None) == (external is None):
            raise SimError(1201, "give exactly one of task_ids and external_task_ids")
        wanted = [v.strip() for v in (ids if ids is not None else str(external)).split(",") if v.strip()]
        if not wanted:
            raise SimError(1201, "task_ids or external_task_ids must name at least one task")
        return state.tasks_by_ids(wanted, external=external is not None)

    async def listing(request: Request) -> object:
        return state.list_new(await _optional_body(request, sim.limits))

    async def package(request: Request) -> object:
        return state.billing("unit", await _optional_body(request, sim.limits))

    async def balance(request: Request) -> object:
        return state.billing("cash", await _optional_body(request, sim.limits))

    for path, method, handler in (
        ("/tasks", "GET", by_ids),
        ("/tasks", "POST", listing),
        ("/account/billing/package", "POST", package),
        ("/account/billing/balance", "POST", balance),
    ):
        routes.append(Route(path, _kling(sim, "query", handler, api_key_only=True), methods=[method]))
    return routes


def _admin_routes(sim: Simulator) -> list[Route]:
    """``/_simulator/...``: fault injection and state over HTTP, for a simulator in another process."""
    state = sim.state

    async def faults(request: Request) -> object:
        body = await _json_body(request, sim.limits)
        if not isinstance(body, dict) or not isinstance(body.get("code"), int):
            raise SimError(1201, 'body must be {"code": int, "times": int, "scope": "create|query|any"}')
        times = body.get("times", 1)
        if isinstance(times, bool) or not isinstance(times, int):
            raise SimError(1201, 'body must be {"code": int, "times": int, "scope": "create|query|any"}')
        message = body.get("message")
        try:
            state.inject(
                body["code"],
                times=times,
                scope=str(body.get("scope", "create")),
                message=None if message is None else str(message),
            )
        except ValueError as exc:
            raise SimError(1201, str(exc)) from None
        return {"injected": body["code"]}

    async def fail_next(request: Request) -> object:
        body = await _json_body(request, sim.limits)
        times = body.get("times", 1) if isinstance(body, dict) else 1
        if isinstance(times, bool) or not isinstance(times, int) or not 0 <= times <= 1_000_000:
            raise SimError(1201, 'body must be {"times": <whole number from 0 to 1000000>}')
        state.fail_next(times)
        return {"fail_next": times}

    async def pack(request: Request) -> object:
        pack_type = request.path_params["pack_type"]
        body = await _json_body(request, sim.limits)
        usage = f'POST /_simulator/packs/<{"|".join(PACK_TYPES)}> {{"remaining": "<units>"}}'
        if pack_type not in PACK_TYPES or not isinstance(body, dict) or "remaining" not in body:
            raise SimError(1201, usage)
        raw = body["remaining"]
        try:
            remaining = Decimal(str(raw)) if isinstance(raw, (int, float, str)) else None
        except ArithmeticError:
            remaining = None
        if isinstance(raw, bool) or remaining is None:
            raise SimError(1201, usage)
        try:
            state.set_remaining(pack_type, remaining)
        except ValueError as exc:
            raise SimError(1201, f"{usage}: {exc}") from None
        return {"pack": pack_type, "remaining": state.packs[pack_type].remaining}

    async def add_pack(request: Request) -> object:
        body = await _json_body(request, sim.limits)
        usage = (
            'POST /_simulator/packs {"pack_type": "video|image|tryon", "total": "<units>", '
            '"purchase_time": <ms>, "effective_time": <ms>, "invalid_time": <ms>, "name": "<optional>"}'
        )
        fields = ("pack_type", "total", "purchase_time", "effective_time", "invalid_time")
        if not isinstance(body, dict) or any(f not in body for f in fields):
            raise SimError(1201, usage)
        name = body.get("name")
        try:
            added = state.add_pack(
                str(body["pack_type"]),
                body["total"],
                purchase_time=body["purchase_time"],
                effective_time=body["effective_time"],
                invalid_time=body["invalid_time"],
                name=name if name is None else str(name),
            )
        except ValueError as exc:
            raise SimError(1201, f"{usage}: {exc}") from None
        return added.to_json(state.now_ms())

    async def snapshot(request: Request) -> object:
        state.refresh()
        return {
            "tasks": [
                dict(t.to_json(), endpoint=t.endpoint, standard=t.standard) for t in state.tasks.values()
            ],
            "packs": {k: p.to_json(state.now_ms()) for k, p in state.packs.items()},
            "all_packs": [p.to_json(state.now_ms()) | {"pack_type": p.pack_type} for p in state.all_packs],
            "deliveries": len(sim.callbacks.deliveries),
        }

    return [
        Route("/_simulator/faults", _kling(sim, "admin", faults), methods=["POST"]),
        Route("/_simulator/fail-next", _kling(sim, "admin", fail_next), methods=["POST"]),
        Route("/_simulator/packs", _kling(sim, "admin", add_pack), methods=["POST"]),
        Route("/_simulator/packs/{pack_type}", _kling(sim, "admin", pack), methods=["POST"]),
        Route("/_simulator/state", _kling(sim, "admin", snapshot), methods=["GET"]),
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return _error(
        SimError(1202, f"{request.method} {request.url.path} is not a Kling API method", http_status=status)
    )


def create_app(
    access_key: str | None = None,
    secret_key: str | None = None,
    *,
    simulator: Simulator | None = None,
    **settings: Any,
) -> Starlette:
    """A Kling-compatible ASGI app. ``settings`` are :class:`Simulator`'s arguments.

    Keys default to fresh random ones (read them back from ``app.state.simulator.auth``).
    """
    sim = simulator or Simulator(
        access_key=access_key or f"ak-{secrets.token_hex(8)}",
        secret_key=secret_key or secrets.token_urlsafe(24),
        **settings,
    )
    app = Starlette(
        routes=_routes(sim),
        lifespan=sim.lifespan,
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.simulator = sim
    return app
