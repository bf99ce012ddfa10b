"""What the proxy does with each request, apart from HTTP: a face over the guard and the ledger.

A create: authenticate the virtual key -> read the body (size limit) -> take the client's
``callback_url`` and put the proxy's own (or none) -> give it an ``external_task_id`` when it
has none -> price it (400/1201 when it cannot be priced) -> the key's policy (models,
per-request maximum) -> claim the external id for the key (concurrency, 1303) -> the guard's
two-phase flow on the key's scopes and ``account`` (reserve, send with the real credentials,
attach) -> Kling's answer. Queries pass through, filtered to the key's own tasks; a task seen
ended is settled (once: the ledger is idempotent) and its callback queued for the client.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio

from ..errors import (
    BudgetExceeded,
    InvalidRequest,
    PermissionDenied,
    PricingError,
    ValidationError,
)
from ..guard import AsyncCostAwareClient
from ..kling.endpoints import CREATE_PATHS, external_task_id_of, with_external_task_id
from ..kling.tasks import AnyTask, is_new_task_ref, parse_task
from ..ledger import Ledger
from ..ledger.proxy_store import KeyRecord, OwnedTask
from ..ledger.records import MAX_KEY
from ..money import format_quantity
from ..pricing import LEGACY_IDS
from ..pricing.standard import split_new_path
from .callback_url import acheck_callback_url
from .keys import Keys

__all__ = ["CALLBACK_PATH", "ProxyService", "ProxySettings", "dump_task"]

CALLBACK_PATH = "/_kling_cost/callback"
"""Where Kling's callbacks reach the proxy (``--public-url`` + this path)."""

MAX_BODY_BYTES = 50 * 1024 * 1024
LIPSYNC_PATHS = frozenset({CREATE_PATHS["lip-sync"], CREATE_PATHS["advanced-lip-sync"]})
LIPSYNC_MAX_SECONDS = 180
"""What a lip-sync through the proxy is reserved for: the longest video Kling makes (an extended
video stops at 3 minutes). Kling's charge, per started 5 s of the real video, is what commits."""
NEVER_MS = 253402300799000
"""``invalid_time`` of a lifetime budget shown as a pack: 9999-12-31T23:59:59Z."""
_ALIASES = {**LEGACY_IDS, **{legacy: new for new, legacy in LEGACY_IDS.items()}}


@dataclass(frozen=True)
class ProxySettings:
    """How a proxy runs (the ``kling-cost proxy`` options)."""

    public_url: str | None = None
    """The proxy's URL as Kling reaches it: creates carry ``<public_url>/_kling_cost/callback``
    as their ``callback_url``. None: no callback is asked of Kling; the settler polls."""
    callback_secret: str | None = field(default=None, repr=False)
    """Kling's webhook secret: callbacks without a valid signature are refused."""
    allow_unpriced: bool = False
    allow_callback_hosts: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    settle_interval: float = 15.0
    relay_interval: float = 2.0
    client_timeout: float = 60.0
    """Seconds a client has to send its whole request body (408/1200 after)."""
    metrics_token: str | None = field(default=None, repr=False)
    """The bearer token ``/metrics`` asks for (``Authorization: Bearer <token>``); None: open."""


def dump_task(task: AnyTask) -> dict[str, Any]:
    """A task as Kling wrote it (every field it sent, none we added)."""
    return task.model_dump(mode="json", by_alias=True, exclude_unset=True)


def is_new(endpoint: str) -> bool:
    """Whether ``endpoint`` is on the new standard (a create path, or ``/tasks``); a new-standard
    family with a model it does not serve counts as new (its create is refused when priced)."""
    try:
        return is_new_task_ref(endpoint)
    except PricingError:
        return True


def _model_allowed(key: KeyRecord, models: set[str]) -> bool:
    if key.models is None:
        return True
    allowed = set(key.models) | {_ALIASES[m] for m in key.models if m in _ALIASES}
    return bool(models & allowed)


@dataclass
class ProxyService:
    """The proxy's work for one process: keys, the guards (one per unit) and the ledger."""

    ledger: Ledger
    keys: Keys
    guards: Mapping[str, AsyncCostAwareClient]
    """``units`` and ``credits``: the same Kling client under two catalogs."""
    settings: ProxySettings = field(default_factory=ProxySettings)
    on_relay: Callable[[], Any] | None = None
    """Called (in the event loop) after a callback for a client was queued: wakes the relay."""
    wall: Callable[[], float] = time.time

    async def _ledger(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    # -- keys ---------------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None, *, new_standard: bool) -> KeyRecord:
        def check() -> KeyRecord:
            now = self.ledger.clock()
            key = self.keys.authenticate(
                authorization,
                now=now,
                jwt_now=datetime.fromtimestamp(self.wall(), UTC),
                jwt_allowed=not new_standard,
            )
            self.keys.store.touch(key, now)
            return key

        result: KeyRecord = await anyio.to_thread.run_sync(check)
        return result

    # -- creates ------------------------------------------------------------------------------

    def _take_callback(self, path: str, body: dict[str, Any]) -> str | None:
        """The client's callback URL, replaced by the proxy's own (or removed)."""
        ours = (
            None if self.settings.public_url is None else self.settings.public_url.rstrip("/") + CALLBACK_PATH
        )
        holder: dict[str, Any] | None = body
        if is_new(path):
            options = body.get("options")
            if options is None and ours is not None:
                options = body["options"] = {}
            holder = options if isinstance(options, dict) else None
        if holder is None:
            return None
        given = holder.pop("callback_url", None)
        if ours is not None:
            holder["callback_url"] = ours
        if given is None or given == "":
            return None
        if not isinstance(given, str):
            raise InvalidRequest("callback_url must be a string", code=1201, http_status=400)
        return given

    async def create(self, key: KeyRecord, path: str, body: object) -> dict[str, Any]:
        """Create within the key's budgets; returns Kling's ``data`` of the new task."""
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object", code=1200, http_status=400)
        guard = self.guards[key.unit]
        callback = self._take_callback(path, body)
        if callback is not None:  # refused (1201) before anything is held: no way into our network
            allowed = (*key.callback_hosts, *self.settings.allow_callback_hosts)
            await acheck_callback_url(callback, allowed_hosts=allowed)
        try:
            ext = external_task_id_of(path, body)
        except PricingError as exc:
            raise InvalidRequest(str(exc), code=1201, http_status=400) from None
        if ext is None:
            ext = f"kcp-{uuid.uuid4().hex}"
            with_external_task_id(path, body, ext)
        if not ext.strip() or len(ext) > MAX_KEY:  # checked before it is claimed (and indexed)
            wanted = f"external_task_id must be 1 to {MAX_KEY} characters, not only spaces"
            raise InvalidRequest(wanted, code=1201, http_status=400)
        # a lip-sync costs per started 5 s of its source video, which the body does not tell
        # (a client's input.duration is a hint anyone can lower): hold the longest video Kling makes
        hints = {"duration": LIPSYNC_MAX_SECONDS} if path in LIPSYNC_PATHS else None
        try:
            req = guard.core.prepare(path, body, hints=hints)
        except (PricingError, ValidationError) as exc:
            raise InvalidRequest(str(exc), code=1201, http_status=400) from None
        self._check_policy(key, path, req.metadata, req.amount, req.unit)
        claimed = await self._ledger(self.keys.store.claim_task, key, ext, req.endpoint, callback)
        try:
            task = await guard.create(req.endpoint, req.body, scopes=key.all_scopes, dedup=False, hints=hints)
        except (BudgetExceeded, PricingError, ValidationError):
            if claimed:
                await self._ledger(self.keys.store.unclaim, key, ext)
            raise
        await self._ledger(self.keys.store.attach, ext, task.task_id)
        return dump_task(task)

    @staticmethod
    def _check_policy(key: KeyRecord, path: str, meta: Mapping[str, Any], amount: Decimal, unit: str) -> None:
        models = {str(meta["model"])} if meta.get("model") else set()
        new = split_new_path(path) if is_new(path) else None
        if new is not None:
            models.add(new[1])
        if not _model_allowed(key, models):
            allowed = ", ".join(key.models or ())
            asked = ", ".join(sorted(models)) or "this model"
            raise PermissionDenied(
                f"key {key.name!r} may not use {asked}; allowed: {allowed}",
                code=1103,
                http_status=403,
            )
        if key.max_per_request is not None and amount > key.max_per_request:
            raise BudgetExceeded(
                f"Request of {format_quantity(amount, unit)} exceeds key {key.name!r}'s per-request "
                f"maximum of {format_quantity(key.max_per_request, unit)}",
                scope=key.scope,
                window="request",
                requested=amount,
                available=key.max_per_request,
                reason="max_per_request",
                unit=unit,
            )

    # -- queries ------------------------------------------------------------------------------

    async def owner_of(self, key: KeyRecord, ident: str) -> OwnedTask | None:
        """The proxy task ``ident`` (a task id or an external id) names, if ``key`` owns it."""
        found: OwnedTask | None = await self._ledger(
            self.keys.store.owner, task_id=ident, external_task_id=ident
        )
        return found if found is not None and found.key_id == key.id else None

    async def fetch(self, owned: OwnedTask) -> AnyTask | None:
        """What Kling says of ``owned`` now (by its task id, else its external id); None when
        Kling has no task under its external id."""
        key = await self._ledger(self.keys.store.key_by_id, owned.key_id)
        guard = self.guards[key.unit if key is not None else "units"]
        if owned.task_id is not None:
            task: AnyTask = await guard.client.get_task(owned.endpoint, owned.task_id)
            return task
        return await guard.flight.find(owned.endpoint, owned.external_task_id, strict=True)

    async def owner_of_any(self, task_id: str | None, external_task_id: str | None) -> OwnedTask | None:
        found: OwnedTask | None = await self._ledger(
            self.keys.store.owner, task_id=task_id, external_task_id=external_task_id
        )
        return found

    def _owner_and_key(self, key_id: int | None, task: AnyTask) -> tuple[OwnedTask | None, KeyRecord | None]:
        """In one worker thread (one hop, not three): the task's proxy owner when that is
        ``key_id`` (any key when None), its task id noted if the proxy did not know it yet, and
        for an ended task the owner's key (its unit picks the guard that settles it)."""
        store = self.keys.store
        owned = store.owner(task_id=task.task_id, external_task_id=task.external_task_id)
        if owned is None or (key_id is not None and owned.key_id != key_id):
            return None, None
        if owned.task_id is None:
            store.attach(owned.external_task_id, task.task_id)
        return owned, store.key_by_id(owned.key_id) if task.done else None

    async def seen(
        self,
        key_id: int | None,
        endpoint: str,
        doc: Mapping[str, Any],
        *,
        raw: bytes | None = None,
    ) -> tuple[AnyTask | None, OwnedTask | None]:
        """A task document from Kling: the task, and its proxy owner when that is ``key_id``
        (any key when None). An owned task that ended is settled (once: the ledger is
        idempotent). Its client's callback is queued: for every status Kling's own callback
        reports (``raw``: the body Kling sent, relayed as it is), else once the task ended."""
        try:
            task = parse_task(endpoint, doc)
        except ValueError:
            return None, None
        if not task.task_id:
            return None, None
        owned, key = await anyio.to_thread.run_sync(self._owner_and_key, key_id, task)
        if owned is None:
            return task, None
        if task.done:
            guard = self.guards[key.unit if key is not None else "units"]
            await guard.settler.settle_by_task(task)
        if owned.callback_url and (task.done or raw is not None):
            body = raw if raw is not None else json.dumps(dump_task(task), separators=(",", ":")).encode()
            status = str(getattr(task, "task_status", None) or getattr(task, "status", "") or "unknown")
            queued = await self._ledger(
                self.ledger.relays.enqueue, owned.key_id, task.task_id, status, owned.callback_url, body
            )
            if queued and self.on_relay is not None:
                self.on_relay()
        return task, owned

    async def filter_owned(self, key: KeyRecord, endpoint: str, items: list[Any]) -> list[Any]:
        """The task documents of a listing that ``key`` owns, in order; the ended ones are
        settled (as a single query's are)."""
        parsed: list[tuple[dict[str, Any], AnyTask]] = []
        for item in items:
            if not isinstance(item, dict):
                continue
            try:
                task = parse_task(endpoint, item)
            except ValueError:
                continue
            if task.task_id:
                parsed.append((item, task))
        ids = [task.task_id for _, task in parsed]
        exts = [task.external_task_id for _, task in parsed if task.external_task_id]
        mine: set[str] = await self._ledger(self.keys.store.owned_by, key, ids, exts)
        kept = []
        for item, task in parsed:
            if task.task_id in mine or (task.external_task_id or "") in mine:
                kept.append(item)
                if task.done:
                    await self.seen(key.id, endpoint, item)
        return kept

    async def packs(self, key: KeyRecord) -> list[dict[str, Any]]:
        """The key's budgets as Kling's resource packs (``/account/costs`` of a virtual key)."""

        def read() -> list[dict[str, Any]]:
            now = self.ledger.clock()
            packs = []
            for scope in (*key.all_scopes, "account"):
                for usage in self.ledger.usages(scope, at=now):
                    budget, window = usage.budget, usage.window
                    remaining = usage.remaining
                    packs.append(
                        {
                            "resource_pack_name": f"{budget.scope} {budget.window} budget ({budget.unit})",
                            "resource_pack_id": f"kling-cost-budget-{budget.id}-{window.key}",
                            "resource_pack_type": "decreasing_total"
                            if budget.window == "lifetime"
                            else "constant_period",
                            "total_quantity": budget.limit,
                            "remaining_quantity": remaining,
                            "purchase_time": _ms(window.start),
                            "effective_time": _ms(window.start),
                            "invalid_time": _ms(window.end) if window.end else NEVER_MS,
                            "status": "online" if remaining > 0 else "runOut",
                        }
                    )
            return packs

        result: list[dict[str, Any]] = await anyio.to_thread.run_sync(read)
        return result


def _ms(value: datetime | None) -> int:
    """Unix milliseconds (a lifetime budget's start: 0)."""
    return 0 if value is None else int(value.timestamp()) * 1000 + value.microsecond // 1000
