"""The proxy's ASGI app: Kling's paths (both standards) in front of Kling, and its own few.

Routing is explicit and fails closed: the generation paths (priced and reserved), the query
paths (filtered to the caller's tasks), ``/account/costs`` (the key's budgets as packs),
``/v1/videos/identify-face`` (free, passed through), Kling's callback (``/_kling_cost/callback``),
``/healthz``, ``/readyz`` and ``/metrics``. Any other path is refused with 404/1202 unless the
proxy runs with ``--allow-unpriced`` (then it is passed through with no budget and no filter).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import (
    AuthError,
    BudgetExceeded,
    InvalidRequest,
    KlingAPIError,
    KlingCostError,
    PricingError,
    StorageError,
    ValidationError,
)
from ..kling.endpoints import CREATE_PATHS, IDENTIFY_FACE_PATH
from ..kling.limits import BodyLimits, parse_json_body, read_body
from ..ledger.proxy_store import KeyRecord
from ..pricing.standard import NEW_FAMILIES
from ..signing import verify_webhook
from .answers import error, error_from, success
from .keys import API_KEY_PREFIX
from .service import CALLBACK_PATH, ProxyService, dump_task, is_new
from .timing import UPSTREAM_SECONDS, Stopwatch
from .upstream import Upstream

__all__ = ["ProxyApp", "Route", "refusal_reason"]

log = logging.getLogger("kling_cost.proxy")
access_log = logging.getLogger("kling_cost.proxy.access")
"""One line per request: method, path, status, key name, refusal reason, milliseconds. Never a
header, a body or a query string (they can carry credentials or prompts)."""

LEGACY_CREATES = frozenset(CREATE_PATHS.values())
BILLING_PATHS = frozenset({"/account/billing/package", "/account/billing/balance"})


def refusal_reason(exc: BaseException) -> str:
    """The ``reason`` label of a refusal (metrics and the access log)."""
    if isinstance(exc, BudgetExceeded):
        return "max_per_request" if exc.reason == "max_per_request" else "budget"
    if isinstance(exc, StorageError):
        return "ledger_unavailable"
    if isinstance(exc, KlingAPIError):
        return {
            1000: "auth",
            1001: "auth",
            1002: "auth",
            1003: "auth",
            1004: "auth",
            1103: "model",
            1201: "invalid",
            1200: "invalid",
            1202: "unknown_path",
            1203: "not_found",
            1303: "concurrency",
        }.get(exc.code or 0, "upstream")
    return "invalid"


def _unsafe(path: str) -> bool:
    """A path with a control character, or an empty, ``.`` or ``..`` segment: never Kling's
    spelling of a path, and one an HTTP client would rewrite before sending it on (httpx
    resolves ``/v1/x/../videos/text2video`` to a create path)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return True
    return path != "/" and any(seg in ("", ".", "..") for seg in path.split("/")[1:])


def _loose(path: str) -> str:
    """``path`` as a lenient server could read it: percent-decoded (repeatedly), lower-cased,
    without ``;parameters``, with empty and dot segments resolved."""
    for _ in range(4):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    kept: list[str] = []
    for part in path.lower().split("/"):
        seg = part.split(";", 1)[0]
        if seg == "..":
            if kept:
                kept.pop()
        elif seg not in ("", "."):
            kept.append(seg)
    return "/" + "/".join(kept)


def _loggable(path: str) -> str:
    """``path`` for the access log: at most 200 characters, a segment that looks like a
    credential (a ``kc-`` API key, a JWT) masked, should a client have put one there."""
    parts = [
        "<redacted>" if seg.startswith(API_KEY_PREFIX) or seg.count(".") == 2 else seg
        for seg in path[:400].split("/")
    ]
    return "/".join(parts)[:200]


def _budget_answer(exc: BudgetExceeded) -> Response:
    """429/1102, naming the budget, its window and what remains (see answers.py)."""
    return error(1102, str(exc), 429)


class ProxyApp:
    """Builds the Starlette app over a :class:`ProxyService` and an :class:`Upstream`."""

    def __init__(
        self,
        service: ProxyService,
        upstream: Upstream,
        *,
        observe: Callable[[str, str, int, float, float, str | None], None] | None = None,
        metrics: Callable[[str | None], Awaitable[tuple[bytes, str]]] | None = None,
        ready: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.service = service
        self.upstream = upstream
        self.limits = BodyLimits(max_bytes=service.settings.max_body_bytes)
        self.observe = observe
        self.metrics = metrics
        self.ready = ready

    # -- dispatch -----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["POST"]),
            Route("/{path:path}", self.dispatch, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    async def dispatch(self, request: Request) -> Response:
        started = time.perf_counter()
        watch = Stopwatch()
        UPSTREAM_SECONDS.set(watch)
        path = "/" + request.path_params["path"].strip("/")
        route = "other"
        reason: str | None = None
        try:
            handler, route = self._handler(request.method, path)
            response = await handler(request, path)
        except BudgetExceeded as exc:
            reason = refusal_reason(exc)
            response = _budget_answer(exc)
        except KlingAPIError as exc:
            reason = refusal_reason(exc)
            response = error_from(exc)
        except StorageError as exc:
            reason = "ledger_unavailable"
            log.error("ledger unavailable: %s", exc)
            response = error(5000, "the proxy's ledger is unavailable; nothing was sent to Kling", 503)
        except (PricingError, ValidationError) as exc:
            reason = "invalid"
            response = error(1201, str(exc), 400)
        except KlingCostError as exc:
            reason = "proxy_error"
            log.error("proxy error on %s %s: %s", request.method, path, exc)
            response = error(5000, f"the proxy failed: {exc}", 500)
        elapsed = time.perf_counter() - started
        if self.observe is not None:
            self.observe(route, request.method, response.status_code, elapsed, watch.seconds, reason)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d key=%s%s %.1fms",
                request.method,
                _loggable(path),
                response.status_code,
                getattr(request.state, "key_name", "-"),
                f" refused={reason}" if reason else "",
                elapsed * 1000,
            )
        return response

    def _handler(self, method: str, path: str) -> tuple[Callable[[Request, str], Awaitable[Response]], str]:
        if _unsafe(path):
            return self.unknown, "unknown"
        found = self._route(method, path)
        if found is not None:
            return found
        if self.service.settings.allow_unpriced and not self._lookalike(path):
            return self.passthrough, "unpriced"
        return self.unknown, "unknown"

    def _lookalike(self, path: str) -> bool:
        """Whether ``path`` (asked with another method, or spelt loosely) may be one of the
        paths the proxy prices or filters: never passed through unpriced."""
        loose = _loose(path)
        return _unsafe(loose) or any(
            self._route(m, p) is not None for m in ("GET", "POST") for p in (path, loose)
        )

    def _route(
        self, method: str, path: str
    ) -> tuple[Callable[[Request, str], Awaitable[Response]], str] | None:
        if method == "POST" and path in LEGACY_CREATES:
            return self.create, "create"
        parts = [p for p in path.split("/") if p]
        if method == "POST" and len(parts) == 2 and parts[0] in NEW_FAMILIES:
            return self.create, "create"
        if method == "GET" and path in LEGACY_CREATES:
            return self.list_legacy, "list"
        if method == "GET" and "/".join(path.split("/")[:-1]) in LEGACY_CREATES:
            return self.query_one, "query"
        if path == "/tasks" and method == "GET":
            return self.tasks_by_ids, "query"
        if path == "/tasks" and method == "POST":
            return self.tasks_listing, "list"
        if path == "/account/costs" and method == "GET":
            return self.account_costs, "account_costs"
        if path == IDENTIFY_FACE_PATH and method == "POST":
            return self.identify_face, "identify_face"
        if path in BILLING_PATHS:
            return self.billing, "billing"
        return None

    async def _key(self, request: Request, *, new_standard: bool) -> KeyRecord:
        key = await self.service.authenticate(request.headers.get("authorization"), new_standard=new_standard)
        request.state.key_name = key.name  # the access log's key=
        return key

    async def _raw_body(self, request: Request) -> bytes:
        """The body's bytes, within the size limit (never read whole first) and the client timeout."""
        try:
            with anyio.fail_after(self.service.settings.client_timeout):
                return await read_body(
                    request.stream(), content_length=request.headers.get("content-length"), limits=self.limits
                )
        except TimeoutError:
            raise InvalidRequest(
                "the request body did not arrive in time", code=1200, http_status=408
            ) from None

    async def _body(self, request: Request) -> object:
        """The JSON body, within the size limit and the client timeout."""
        return parse_json_body(await self._raw_body(request), self.limits)

    # -- Kling's paths ------------------------------------------------------------------------

    async def create(self, request: Request, path: str) -> Response:
        key = await self._key(request, new_standard=is_new(path))
        body = await self._body(request)
        data = await self.service.create(key, path, body)
        return success(data)

    async def query_one(self, request: Request, path: str) -> Response:
        endpoint, _, ident = path.rpartition("/")
        key = await self._key(request, new_standard=False)
        answer = await self.upstream.send("GET", path, params=dict(request.query_params))
        if not answer.ok:
            self.upstream.raise_for(answer)
        data = (answer.envelope or {}).get("data")
        owned = None if not isinstance(data, dict) else (await self.service.seen(key.id, endpoint, data))[1]
        if owned is None:
            return self.not_found(ident)
        return Response(answer.content, media_type="application/json")

    async def list_legacy(self, request: Request, path: str) -> Response:
        key = await self._key(request, new_standard=False)
        answer = await self.upstream.send("GET", path, params=dict(request.query_params))
        if not answer.ok:
            self.upstream.raise_for(answer)
        items = (answer.envelope or {}).get("data")
        mine = await self._mine(key, path, items if isinstance(items, list) else [])
        return success(mine, (answer.envelope or {}).get("request_id"))

    async def _mine(self, key: KeyRecord, endpoint: str, items: list[Any]) -> list[Any]:
        """The items of a listing that belong to ``key`` (one ledger read for the page); those
        that ended are settled."""
        return await self.service.filter_owned(key, endpoint, items)

    async def tasks_by_ids(self, request: Request, path: str) -> Response:
        key = await self._key(request, new_standard=True)
        answer = await self.upstream.send("GET", path, params=dict(request.query_params), api_key_only=True)
        if not answer.ok:
            self.upstream.raise_for(answer)
        items = (answer.envelope or {}).get("data")
        mine = await self._mine(key, "/tasks", items if isinstance(items, list) else [])
        return success(mine, (answer.envelope or {}).get("request_id"))

    async def tasks_listing(self, request: Request, path: str) -> Response:
        key = await self._key(request, new_standard=True)
        raw = await self._raw_body(request) or None
        answer = await self.upstream.send("POST", path, body=raw, api_key_only=True)
        if not answer.ok:
            self.upstream.raise_for(answer)
        data = (answer.envelope or {}).get("data")
        if not isinstance(data, dict):
            return success(data, (answer.envelope or {}).get("request_id"))
        result = data.get("result")
        mine = await self._mine(key, "/tasks", result if isinstance(result, list) else [])
        return success(
            {**data, "result": mine, "count": len(mine)}, (answer.envelope or {}).get("request_id")
        )

    async def account_costs(self, request: Request, path: str) -> Response:
        key = await self._key(request, new_standard=False)
        packs = await self.service.packs(key)
        return success({"code": 0, "msg": "SUCCEED", "resource_pack_subscribe_infos": packs})

    async def identify_face(self, request: Request, path: str) -> Response:
        await self._key(request, new_standard=False)
        body = await self._raw_body(request)
        answer = await self.upstream.send("POST", path, body=body)
        return Response(answer.content, status_code=answer.status, media_type="application/json")

    async def billing(self, request: Request, path: str) -> Response:
        await self._key(request, new_standard=True)
        raise KlingAPIError(
            "the account's bill is not available through a virtual key; ask the proxy's operator",
            code=1103,
            http_status=403,
        )

    async def passthrough(self, request: Request, path: str) -> Response:
        await self._key(request, new_standard=False)
        body = await self._raw_body(request) or None
        answer = await self.upstream.send(
            request.method, path, params=dict(request.query_params), body=body, api_key_only=is_new(path)
        )
        return Response(answer.content, status_code=answer.status, media_type="application/json")

    async def unknown(self, request: Request, path: str) -> Response:
        raise KlingAPIError(
            f"{request.method} {path} is not a path this proxy knows how to price or filter; "
            "refused (start the proxy with --allow-unpriced to pass unknown paths through)",
            code=1202,
            http_status=404,
        )

    @staticmethod
    def not_found(ident: str) -> Response:
        return error(1203, f"task {ident} not found", 404)

    # -- the proxy's own paths ----------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        """Kling's callback: verify, settle, queue the client's callback. Always 200 once
        recorded (Kling retries anything else). Without a webhook secret anyone can post here,
        so the body only names the task: what Kling answers about it is settled and relayed."""
        try:
            body = await self._raw_body(request)
        except InvalidRequest as exc:
            return error_from(exc)
        secret = self.service.settings.callback_secret
        if secret is not None:
            try:
                verify_webhook(secret, request.headers, body)
            except AuthError as exc:
                return error(1002, f"callback refused: {exc}", 401)
        try:
            doc = json.loads(body)
        except ValueError:
            return error(1200, "callback body is not JSON", 400)
        if not isinstance(doc, dict):
            return error(1200, "callback body must be a task object", 400)
        ident = doc.get("task_id") or doc.get("id")
        ext = doc.get("external_id") or (doc.get("task_info") or {}).get("external_task_id")
        owned = await self.service.owner_of_any(
            str(ident) if ident else None, str(ext) if isinstance(ext, str) else None
        )
        if owned is None:
            return error(1203, "no task of this proxy", 404)
        try:
            if secret is None:  # unsigned: never trusted; Kling's own word on the task
                task = await self.service.fetch(owned)
                if task is None:
                    return error(1203, "no task of this proxy", 404)
                doc = dump_task(task)
                body = json.dumps(doc, separators=(",", ":")).encode()
            await self.service.seen(None, owned.endpoint, doc, raw=body)
        except StorageError:
            return error(5000, "ledger unavailable; retry", 503)
        except KlingCostError as exc:
            log.warning("callback for %s: the task could not be checked with Kling: %s", owned.task_id, exc)
            return error(5000, "the task could not be checked with Kling; retry", 503)
        return success(None)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(self, request: Request) -> Response:
        if self.ready is None:
            return Response(b'{"status":"ok"}', media_type="application/json")
        checks = await self.ready()
        ok = all(v == "ok" for v in checks.values())
        return Response(
            json.dumps({"status": "ok" if ok else "unavailable", **checks}).encode(),
            status_code=200 if ok else 503,
            media_type="application/json",
        )

    async def metrics_page(self, request: Request) -> Response:
        if self.metrics is None:
            return error(1202, "metrics are off", 404)
        token = self.service.settings.metrics_token
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # the bytes the scraper sent (Starlette decoded them as latin-1) against the token's
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.encode("latin-1").strip(), token.encode("utf-8", "surrogateescape")
            ):
                refused = error(1000, "/metrics needs its bearer token (Authorization: Bearer <token>)", 401)
                refused.headers["www-authenticate"] = 'Bearer realm="kling-cost metrics"'
                return refused
        content, content_type = await self.metrics(request.headers.get("accept"))
        return Response(content, media_type=content_type)

    @staticmethod
    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (a method no route takes: 405) in Kling's envelope."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error(1202, f"{request.method} is not a method of {request.url.path[:200]}", status)

    def build(self, lifespan: Any = None) -> Starlette:
        return Starlette(
            routes=self.routes(), lifespan=lifespan, exception_handlers={HTTPException: self.http_error}
        )
