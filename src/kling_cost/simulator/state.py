"""The simulator's account: resource packs, tasks and their lifecycle, faults to inject."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..errors import PricingError, ValidationError
from ..money import format_amount
from ..pricing import Catalog, PriceRequest, estimate, load_catalog
from .clock import Clock
from .errors import SimError
from .validation import check_body, price_request

__all__ = ["PACK_TYPES", "CallbackEvent", "Fault", "Pack", "SimTask", "SimulatorState"]

PACK_TYPES = ("video", "image", "tryon")
ACTIVE = ("submitted", "processing")
MAX_VIDEO_SECONDS = 180
DAY_MS = 86_400_000


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


MAX_PACK_UNITS = Decimal(10**12)
"""Most units a simulated pack holds; larger sizes (or NaN, infinities) are refused, since
amounts past Decimal's range would break every later request."""
MAX_TASK_SECONDS = 86_400.0


def pack_units(value: object) -> Decimal:
    """``value`` as a pack size: a finite number of units from 0 to :data:`MAX_PACK_UNITS`;
    raises :class:`~kling_cost.errors.ValidationError` (a ``ValueError``) otherwise."""
    try:
        units = Decimal(str(value)) if isinstance(value, (int, str, Decimal)) else None
    except ArithmeticError:
        units = None
    if isinstance(value, bool) or units is None or not units.is_finite() or not 0 <= units <= MAX_PACK_UNITS:
        raise ValidationError(f"pack size {value!r} must be a number of units from 0 to {MAX_PACK_UNITS:,}")
    return units


@dataclass
class Pack:
    """One resource pack: ``remaining`` units (exact), valid from ``effective_time`` to ``invalid_time``."""

    name: str
    pack_id: str
    pack_type: str
    total: Decimal
    remaining: Decimal
    purchase_time: int
    effective_time: int
    invalid_time: int
    concurrency: int

    def status(self, now_ms: int) -> str:
        if now_ms < self.effective_time:
            return "toBeOnline"
        if now_ms >= self.invalid_time:
            return "expired"
        if self.remaining <= 0:
            return "runOut"
        return "online"

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "resource_pack_name": self.name,
            "resource_pack_id": self.pack_id,
            "resource_pack_type": "decreasing_total",
            "total_quantity": self.total,
            "remaining_quantity": self.remaining,
            "purchase_time": self.purchase_time,
            "effective_time": self.effective_time,
            "invalid_time": self.invalid_time,
            "status": self.status(now_ms),
        }


@dataclass
class SimTask:
    task_id: str
    endpoint: str
    pack_type: str
    external_task_id: str | None
    created_at: int
    processing_at: int
    finish_at: int
    cost: Decimal
    slots: int
    will_fail: bool
    callback_url: str | None
    video_seconds: int
    model: str | None
    mode: str
    n: int
    status: str = "submitted"
    status_msg: str = ""
    updated_at: int = 0
    charged: Decimal | None = None
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": self.status,
            "task_status_msg": self.status_msg,
            "task_info": {"external_task_id": self.external_task_id} if self.external_task_id else {},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.result is not None:
            data["task_result"] = self.result
        if self.charged is not None:
            data["final_unit_deduction"] = format_amount(self.charged)
        return data


@dataclass(frozen=True)
class CallbackEvent:
    url: str
    payload: dict[str, Any]


@dataclass
class Fault:
    """Answer the next ``times`` matching requests with ``code`` instead of serving them."""

    code: int
    times: int = 1
    scope: str = "create"  # create, query or any
    message: str = "injected fault"


@dataclass
class _Config:
    task_seconds: float
    failure_rate: float
    concurrency: dict[str, int]
    rate_limit: int | None
    blocked_terms: tuple[str, ...]
    result_base_url: str
    failure_message: str = "task failed (simulated failure)"


class SimulatorState:
    """Everything the simulated Kling account holds; thread-safe, driven by ``clock``."""

    def __init__(
        self,
        *,
        clock: Clock,
        task_seconds: float,
        failure_rate: float,
        seed: int | None,
        units: Mapping[str, Decimal],
        concurrency: int | Mapping[str, int],
        pack_days: int,
        rate_limit: int | None,
        blocked_terms: tuple[str, ...],
        result_base_url: str,
        catalog: Catalog | str,
    ) -> None:
        if not 0 <= failure_rate <= 1:
            raise ValidationError(f"failure_rate {failure_rate} must be between 0 and 1")
        if not 0 <= task_seconds <= MAX_TASK_SECONDS:  # also NaN and infinity
            raise ValidationError(f"task_seconds {task_seconds} must be from 0 to {MAX_TASK_SECONDS:.0f}")
        limits = (
            dict.fromkeys(PACK_TYPES, concurrency)
            if isinstance(concurrency, int)
            else {t: int(concurrency.get(t, 5)) for t in PACK_TYPES}
        )
        self.clock = clock
        self.config = _Config(
            task_seconds=task_seconds,
            failure_rate=failure_rate,
            concurrency=limits,
            rate_limit=rate_limit,
            blocked_terms=tuple(t.lower() for t in blocked_terms),
            result_base_url=result_base_url.rstrip("/"),
        )
        self.catalog = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._counter = 0
        now = self.now_ms()
        self.packs: dict[str, Pack] = {}
        for index, pack_type in enumerate(PACK_TYPES, start=1):
            amount = pack_units(units.get(pack_type, 0))
            self.packs[pack_type] = Pack(
                name=f"{pack_type} pack",
                pack_id=f"sim-pack-{index}",
                pack_type=pack_type,
                total=amount,
                remaining=amount,
                purchase_time=now,
                effective_time=now,
                invalid_time=now + pack_days * DAY_MS,
                concurrency=limits[pack_type],
            )
        self.tasks: dict[str, SimTask] = {}
        self._by_external: dict[str, SimTask] = {}
        self._videos: dict[str, SimTask] = {}
        self._faults: list[Fault] = []
        self._fail_next = 0
        self._recent_creates: deque[float] = deque()
        self.outbox: deque[CallbackEvent] = deque()

    # ------------------------------------------------------------------ time

    def now_ms(self) -> int:
        return _ms(self.clock.now())

    def refresh(self) -> None:
        """Move every task whose time has come; queue a callback for each status change."""
        with self._lock:
            now = self.now_ms()
            for task in self.tasks.values():
                if task.status == "submitted" and now >= task.processing_at:
                    self._set_status(task, "processing", task.processing_at)
                if task.status == "processing" and now >= task.finish_at:
                    self._finish(task, task.finish_at)

    def _set_status(self, task: SimTask, status: str, at: int) -> None:
        task.status = status
        task.updated_at = at
        if task.callback_url:
            self.outbox.append(CallbackEvent(task.callback_url, task.to_json()))

    def _finish(self, task: SimTask, at: int) -> None:
        if task.will_fail:
            task.charged = Decimal(0)
            task.status_msg = task.status_msg or self.config.failure_message
            self._set_status(task, "failed", at)
            return
        pack = self.packs[task.pack_type]
        pack.remaining -= task.cost
        task.charged = task.cost
        task.result = self._result(task)
        self._set_status(task, "succeed", at)

    def _result(self, task: SimTask) -> dict[str, Any]:
        base = self.config.result_base_url
        if task.pack_type == "video":
            video_id = f"{task.task_id}-video-1"
            self._videos[video_id] = task
            return {
                "videos": [
                    {
                        "id": video_id,
                        "url": f"{base}/videos/{task.task_id}/{video_id}.mp4",
                        "duration": str(task.video_seconds),
                    }
                ]
            }
        return {
            "images": [{"index": i, "url": f"{base}/images/{task.task_id}/{i}.png"} for i in range(task.n)]
        }

    # ------------------------------------------------------------------ faults and admin

    def inject(self, code: int, *, times: int = 1, scope: str = "create", message: str | None = None) -> None:
        if scope not in ("create", "query", "any"):
            raise ValidationError(f"fault scope {scope!r}: use create, query or any")
        with self._lock:
            self._faults.append(Fault(code, times, scope, message or f"injected fault {code}"))

    def fail_next(self, times: int = 1) -> None:
        """The next ``times`` accepted tasks will fail (and cost nothing)."""
        with self._lock:
            self._fail_next += times

    def fail_task(self, task_id: str, message: str = "task failed (forced)") -> None:
        """Make a task that has not ended yet fail when its time comes."""
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.status not in ACTIVE:
                raise ValidationError(f"no running task {task_id}")
            task.will_fail = True
            task.status_msg = message

    def set_remaining(self, pack_type: str, units: Decimal) -> None:
        amount = pack_units(units)
        with self._lock:
            self.packs[pack_type].remaining = amount

    def expire_pack(self, pack_type: str) -> None:
        with self._lock:
            self.packs[pack_type].invalid_time = self.now_ms()

    def take_fault(self, scope: str) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.scope in (scope, "any") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    raise SimError(fault.code, fault.message)

    # ------------------------------------------------------------------ API

    def submit(self, endpoint: str, raw: object) -> dict[str, Any]:
        with self._lock:
            self.refresh()
            self._rate_check()
            body = check_body(endpoint, raw)
            source = body.get("input") if endpoint in ("effects", "lip-sync") else body
            text = " ".join(str(body.get(k) or "") for k in ("prompt", "negative_prompt")).lower()
            if isinstance(source, Mapping):
                text += " " + str(source.get("text") or "").lower()
            if any(term in text for term in self.config.blocked_terms):
                raise SimError(1301, "content safety: the prompt was rejected")
            external = body.get("external_task_id") or None
            if external is not None and external in self._by_external:
                raise SimError(1201, f"external_task_id {external} already exists")
            request, seconds = self._priced(endpoint, body)
            try:
                est = estimate(request, catalog=self.catalog, as_of=self._today())
            except PricingError as exc:
                raise SimError(1201, str(exc)) from None
            pack = self.packs[est.pack]
            now = self.now_ms()
            if pack.status(now) in ("expired", "toBeOnline"):
                raise SimError(1102, f"the {pack.pack_type} resource pack has expired")
            slots = request.n if est.pack == "image" else 1
            active = [t for t in self.tasks.values() if t.pack_type == est.pack and t.status in ACTIVE]
            held = sum((t.cost for t in active), Decimal(0))
            if pack.remaining - held < est.amount:
                raise SimError(1102, f"the {pack.pack_type} resource pack is used up")
            if sum(t.slots for t in active) + slots > pack.concurrency:
                raise SimError(
                    1303, f"parallel tasks over the {pack.pack_type} resource pack's limit {pack.concurrency}"
                )
            task = self._new_task(endpoint, body, request, est.amount, est.pack, slots, seconds)
            return task.to_json()

    def _priced(self, endpoint: str, body: Mapping[str, Any]) -> tuple[PriceRequest, int]:
        """The request to price and the length in seconds of the video it makes."""
        if endpoint == "video-extend":
            price_request(endpoint, body)  # prompt rules
            source = self._videos.get(str(body["video_id"]))
            if source is None:
                raise SimError(1201, f"video_id {body['video_id']} is not a video of this account")
            seconds = source.video_seconds + 5
            if seconds > MAX_VIDEO_SECONDS:
                raise SimError(1201, f"an extended video may last at most {MAX_VIDEO_SECONDS} s")
            return self._build("video-extend", model=source.model, mode=source.mode), seconds
        if endpoint == "lip-sync":
            raw = body["input"]
            video_id = raw.get("video_id")
            if video_id:
                source = self._videos.get(str(video_id))
                if source is None:
                    raise SimError(1201, f"video_id {video_id} is not a video of this account")
                seconds = source.video_seconds
            else:
                seconds = 5  # a video given by URL: the simulator assumes 5 s
            return self._build("lip-sync", duration=seconds), seconds
        request = price_request(endpoint, body)
        return request, request.duration or 5

    @staticmethod
    def _build(kind: str, **fields: Any) -> PriceRequest:
        try:
            return PriceRequest.build(kind, **fields)
        except PricingError as exc:
            raise SimError(1201, str(exc)) from None

    def _today(self) -> Any:
        return datetime.fromtimestamp(self.clock.now(), UTC).date()

    def _rate_check(self) -> None:
        limit = self.config.rate_limit
        if limit is None:
            return
        now = self.clock.now()
        while self._recent_creates and self._recent_creates[0] <= now - 1:
            self._recent_creates.popleft()
        if len(self._recent_creates) >= limit:
            raise SimError(1302, f"requests too fast: at most {limit} creates per second")
        self._recent_creates.append(now)

    def _new_task(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        request: PriceRequest,
        cost: Decimal,
        pack_type: str,
        slots: int,
        seconds: int,
    ) -> SimTask:
        self._counter += 1
        now = self.now_ms()
        total = _ms(self.config.task_seconds)
        will_fail = self._rng.random() < self.config.failure_rate
        if self._fail_next > 0:
            self._fail_next -= 1
            will_fail = True
        external = body.get("external_task_id") or None
        task = SimTask(
            task_id=f"{880_000_000_000 + self._counter}",
            endpoint=endpoint,
            pack_type=pack_type,
            external_task_id=external,
            created_at=now,
            updated_at=now,
            processing_at=now + total // 5,
            finish_at=now + total,
            cost=cost,
            slots=slots,
            will_fail=will_fail,
            callback_url=body.get("callback_url") or None,
            video_seconds=seconds,
            model=request.model,
            mode=request.mode,
            n=request.n,
        )
        self.tasks[task.task_id] = task
        if external is not None:
            self._by_external[external] = task
        if task.callback_url:
            self.outbox.append(CallbackEvent(task.callback_url, task.to_json()))
        self.refresh()  # a zero-length task moves on at once
        return task

    def get(self, endpoint: str, ident: str) -> dict[str, Any]:
        with self._lock:
            self.refresh()
            task = self.tasks.get(ident) or self._by_external.get(ident)
            if task is None or task.endpoint != endpoint:
                raise SimError(1203, f"task {ident} not found")
            return task.to_json()

    def list_tasks(self, endpoint: str, page: int, size: int) -> list[dict[str, Any]]:
        if not 1 <= page <= 1000 or not 1 <= size <= 500:
            raise SimError(1201, "pageNum must be 1..1000 and pageSize 1..500")
        with self._lock:
            self.refresh()
            mine = [t for t in self.tasks.values() if t.endpoint == endpoint]
            mine.sort(key=lambda t: (t.created_at, t.task_id), reverse=True)
            return [t.to_json() for t in mine[(page - 1) * size : page * size]]

    def costs(self, start: int, end: int, name: str | None) -> dict[str, Any]:
        if start > end:
            raise SimError(1201, "start_time must not be after end_time")
        with self._lock:
            self.refresh()
            now = self.now_ms()
            packs = [
                p.to_json(now)
                for p in self.packs.values()
                if p.purchase_time <= end and p.invalid_time >= start and (name is None or p.name == name)
            ]
            return {"code": 0, "msg": "", "resource_pack_subscribe_infos": packs}

    def drain_outbox(self) -> list[CallbackEvent]:
        with self._lock:
            events = list(self.outbox)
            self.outbox.clear()
            return events
