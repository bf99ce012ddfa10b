"""The simulator's account: resource packs, tasks of both API standards and their lifecycle,
faults to inject. Money (packs, balance, the bill) is :class:`~.billing.Accounts`.

Packs: the constructor's ``units`` make one pack of each type (``packs[type]``, the default
pack, as before); :meth:`SimulatorState.add_pack` adds more, with their own purchase,
effective and expiry times. ``/account/costs`` (:meth:`SimulatorState.costs`) answers
``remaining_quantity`` as it was ``costs_lag_ms`` ago (Kling's figure lags its charges by up
to 12 hours), while each task's ``final_unit_deduction`` and the billing listings are timely.
"""

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
from ..pricing import Catalog, Estimate, PriceRequest, estimate, load_catalog
from ..pricing.standard import LEGACY_IDS
from .billing import Accounts, Balance
from .clock import Clock
from .errors import SimError
from .lipsync import FaceSession, check_face_choose, new_session
from .listing import page, parse_query
from .tasks import NEW_STATUS, PRODUCT_TYPES, CallbackEvent, Fault, Pack, SimTask, pack_units
from .validation import check_body, check_new_body, price_request, prompt_text

__all__ = ["PACK_TYPES", "CallbackEvent", "Fault", "Pack", "SimTask", "SimulatorState", "pack_units"]

PACK_TYPES = ("video", "image", "tryon")
ACTIVE = ("submitted", "processing")
MAX_VIDEO_SECONDS = 180
DAY_MS = 86_400_000
VERSION_OF = {legacy: new for new, legacy in LEGACY_IDS.items()}
"""Legacy model id -> the new id of the same model version (they share concurrency slots)."""


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


MAX_TASK_SECONDS = 86_400.0


@dataclass
class _Config:
    task_seconds: float
    failure_rate: float
    concurrency: dict[str, int]
    rate_limit: int | None
    blocked_terms: tuple[str, ...]
    result_base_url: str
    failure_message: str = "task failed (simulated failure)"
    motion_seconds: Decimal = Decimal("10.04")


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
        balance: Balance | None = None,
        motion_seconds: Decimal | str = "10.04",
        costs_lag_ms: int = 0,
    ) -> None:
        if not 0 <= failure_rate <= 1:
            raise ValidationError(f"failure_rate {failure_rate} must be between 0 and 1")
        if not 0 <= task_seconds <= MAX_TASK_SECONDS:  # also NaN and infinity
            raise ValidationError(f"task_seconds {task_seconds} must be from 0 to {MAX_TASK_SECONDS:.0f}")
        if (
            isinstance(costs_lag_ms, bool)
            or not isinstance(costs_lag_ms, int)
            or not 0 <= costs_lag_ms <= 30 * DAY_MS
        ):
            raise ValidationError(f"costs lag {costs_lag_ms!r} ms must be from 0 to 30 days")
        self.costs_lag_ms = costs_lag_ms
        """How far behind ``/account/costs``' ``remaining_quantity`` is (ms)."""
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
            motion_seconds=_motion_seconds(motion_seconds),
        )
        self.catalog = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._counter = 0
        now = self.now_ms()
        self.packs: dict[str, Pack] = {}
        """The default pack of each type (the constructor's ``units``); all packs: ``all_packs``."""
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
        self.all_packs: list[Pack] = list(self.packs.values())
        """Every pack of the account, the default ones first, then those :meth:`add_pack` added."""
        self.accounts = Accounts(self.all_packs, balance, self.catalog)
        self.tasks: dict[str, SimTask] = {}
        self._by_external: dict[str, SimTask] = {}
        self._videos: dict[str, SimTask] = {}
        self._sessions: dict[str, FaceSession] = {}
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
            self.outbox.append(CallbackEvent(task.callback_url, task.callback_payload()))

    def _finish(self, task: SimTask, at: int) -> None:
        if task.will_fail:
            task.charged = Decimal(0)
            task.status_msg = task.status_msg or self.config.failure_message
            self._set_status(task, "failed", at)
            return
        units = task.cost
        if task.estimate is not None and task.estimate.request.billed_on_output:
            units = task.estimate.for_output(task.output_seconds).amount  # Kling bills the output
        task.charge = self.accounts.charge(task, units, at)
        task.charged = units
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
                        "duration": task.output_seconds,
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
        """Set what the default pack of ``pack_type`` holds."""
        amount = pack_units(units)
        with self._lock:
            self.packs[pack_type].set_remaining(amount, self.now_ms())

    def expire_pack(self, pack_type: str) -> None:
        """Every pack of ``pack_type`` expires now (what they hold is lost)."""
        with self._lock:
            now = self.now_ms()
            for pack in self.all_packs:
                if pack.pack_type == pack_type and pack.invalid_time > now:
                    pack.invalid_time = now

    def add_pack(
        self,
        pack_type: str,
        total: Decimal | int | str,
        *,
        purchase_time: int,
        effective_time: int,
        invalid_time: int,
        name: str | None = None,
    ) -> Pack:
        """A new pack of ``pack_type`` holding ``total`` units (times in Unix ms): ``toBeOnline``
        before ``effective_time``, ``expired`` from ``invalid_time`` on (its units lost)."""
        if pack_type not in PACK_TYPES:
            raise ValidationError(f"pack type {pack_type!r}: use one of {', '.join(PACK_TYPES)}")
        amount = pack_units(total)
        times = (purchase_time, effective_time, invalid_time)
        if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < 2**53 for t in times):
            raise ValidationError("purchase_time, effective_time and invalid_time must be Unix times in ms")
        if not purchase_time <= effective_time < invalid_time:
            raise ValidationError("a pack needs purchase_time <= effective_time < invalid_time")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
            raise ValidationError("a pack's name must be a non-empty text of at most 200 characters")
        with self._lock:
            pack = Pack(
                name=name or f"{pack_type} pack {len(self.all_packs) + 1}",
                pack_id=f"sim-pack-{len(self.all_packs) + 1}",
                pack_type=pack_type,
                total=amount,
                remaining=amount,
                purchase_time=purchase_time,
                effective_time=effective_time,
                invalid_time=invalid_time,
                concurrency=self.config.concurrency[pack_type],
            )
            self.all_packs.append(pack)
            return pack

    def take_fault(self, scope: str) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.scope in (scope, "any") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    raise SimError(fault.code, fault.message)

    # ------------------------------------------------------------------ creates

    def submit(self, endpoint: str, raw: object, key_name: str = "") -> dict[str, Any]:
        """A legacy create (``/v1/...``, ``model_name`` in the body): the legacy task object."""
        with self._lock:
            self.refresh()
            self._rate_check()
            body = check_body(endpoint, raw)
            self._screen(prompt_text(endpoint, body))
            request, seconds = self._priced(endpoint, body)
            work = _Work(
                endpoint=endpoint,
                standard="legacy",
                request=request,
                seconds=seconds,
                output=str(seconds),
                external=body.get("external_task_id") or None,
                callback_url=body.get("callback_url") or None,
                key_name=key_name,
            )
            return self._accept(work).to_json()

    def submit_new(self, family: str, model: str, raw: object, key_name: str = "") -> dict[str, Any]:
        """A new-standard create (``/{family}/{model}``): the create answer ``{id, status, ...}``."""
        with self._lock:
            self.refresh()
            self._rate_check()
            body, request = check_new_body(family, model, raw)
            self._screen(prompt_text(family, body))
            options = body.get("options") or {}
            watermark = options.get("watermark_info") or {}
            if request.billed_on_output:  # motion control: the output's length, not the request's
                output = format_amount(self.config.motion_seconds)
                seconds = request.for_output(self.config.motion_seconds).duration or 1
            else:
                seconds = request.duration or 5
                output = str(seconds)
            work = _Work(
                endpoint=request.endpoint,
                standard="new",
                request=request,
                seconds=seconds,
                output=output,
                external=options.get("external_task_id") or None,
                callback_url=options.get("callback_url") or None,
                key_name=key_name,
                watermark=bool(watermark.get("enabled")),
            )
            return self._accept(work).created_json()

    def _screen(self, text: str) -> None:
        if any(term in text.lower() for term in self.config.blocked_terms):
            raise SimError(1301, "content safety: the prompt was rejected")

    def _accept(self, work: _Work) -> SimTask:
        """Price, fund and admit a create; ``external_task_id`` is unique across both standards."""
        if work.external is not None and work.external in self._by_external:
            raise SimError(1201, f"external_task_id {work.external} already exists")
        try:
            est = estimate(work.request, catalog=self.catalog, as_of=self._today())
        except PricingError as exc:
            raise SimError(1201, str(exc)) from None
        limit = self.config.concurrency[est.pack]
        active = [t for t in self.tasks.values() if t.status in ACTIVE]
        funding = self.accounts.fund(est, active, self.now_ms())
        slots = work.request.n if est.pack == "image" else 1
        version = model_version(work.request.model or work.endpoint)
        same = [t for t in active if t.pack_type == est.pack and t.model_version == version]
        if sum(t.slots for t in same) + slots > limit:
            raise SimError(
                1303,
                f"parallel {version} tasks over the {est.pack} resource pack's limit {limit}",
            )
        return self._new_task(work, est, funding, slots, version)

    def _priced(self, endpoint: str, body: Mapping[str, Any]) -> tuple[PriceRequest, int]:
        """The request to price and the length in seconds of the video it makes."""
        if endpoint == "video-extend":
            price_request(endpoint, body)  # prompt rules
            source = self._video(body["video_id"])
            seconds = source.video_seconds + 5
            if seconds > MAX_VIDEO_SECONDS:
                raise SimError(1201, f"an extended video may last at most {MAX_VIDEO_SECONDS} s")
            return self._build("video-extend", model=source.model, mode=source.mode), seconds
        if endpoint == "lip-sync":
            video_id = body["input"].get("video_id")
            seconds = self._video(video_id).video_seconds if video_id else 5  # by URL: assumed 5 s
            return self._build("lip-sync", duration=seconds), seconds
        if endpoint == "advanced-lip-sync":
            session = self._sessions.get(str(body["session_id"]))
            if session is None:
                raise SimError(1201, f"session_id {body['session_id']} is not a face session of this account")
            check_face_choose(body, session)
            return self._build("advanced-lip-sync", duration=session.video_seconds), session.video_seconds
        request = price_request(endpoint, body)
        return request, request.duration or 5

    def _video(self, video_id: object) -> SimTask:
        source = self._videos.get(str(video_id))
        if source is None:
            raise SimError(1201, f"video_id {video_id} is not a video of this account")
        return source

    def identify_face(self, raw: object) -> dict[str, Any]:
        """``identify-face``, answered at once: a session with the faces of a video (free)."""
        if not isinstance(raw, Mapping):
            raise SimError(1200, "request body must be a JSON object")
        video_id, url = raw.get("video_id"), raw.get("video_url")
        if not (isinstance(video_id, str) and video_id.strip()) and not (
            isinstance(url, str) and url.strip()
        ):
            raise SimError(1201, "video_id or video_url is required for identify-face")
        with self._lock:
            seconds = self._video(video_id).video_seconds if video_id else 5  # by URL: assumed 5 s
            self._counter += 1
            session = new_session(f"sess-{880_000_000_000 + self._counter}", seconds)
            self._sessions[session.session_id] = session
            return session.to_json(self.config.result_base_url)

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
        self, work: _Work, est: Estimate, funding: tuple[str, str | None], slots: int, version: str
    ) -> SimTask:
        self._counter += 1
        now = self.now_ms()
        total = _ms(self.config.task_seconds)
        will_fail = self._rng.random() < self.config.failure_rate
        if self._fail_next > 0:
            self._fail_next -= 1
            will_fail = True
        task = SimTask(
            task_id=f"{880_000_000_000 + self._counter}",
            endpoint=work.endpoint,
            pack_type=est.pack,
            external_task_id=work.external,
            created_at=now,
            updated_at=now,
            processing_at=now + total // 5,
            finish_at=now + total,
            cost=est.amount,
            slots=slots,
            will_fail=will_fail,
            callback_url=work.callback_url,
            video_seconds=work.seconds,
            model=work.request.model,
            mode=work.request.mode,
            n=work.request.n,
            standard=work.standard,
            model_version=version,
            estimate=est,
            funding=funding[0],
            pack_id=funding[1],
            list_price=self.accounts.list_price(est.amount, est.pack),
            output_seconds=work.output,
            api_key_name=work.key_name,
            watermark=work.watermark,
        )
        self.tasks[task.task_id] = task
        if work.external is not None:
            self._by_external[work.external] = task
        if task.callback_url:
            self.outbox.append(CallbackEvent(task.callback_url, task.callback_payload()))
        self.refresh()  # a zero-length task moves on at once
        return task

    # ------------------------------------------------------------------ queries

    def get(self, endpoint: str, ident: str) -> dict[str, Any]:
        """A legacy query: tasks created on the legacy standard only (see the README)."""
        with self._lock:
            self.refresh()
            task = self.tasks.get(ident) or self._by_external.get(ident)
            if task is None or task.endpoint != endpoint or task.standard != "legacy":
                raise SimError(1203, f"task {ident} not found")
            return task.to_json()

    def list_tasks(self, endpoint: str, page: int, size: int) -> list[dict[str, Any]]:
        if not 1 <= page <= 1000 or not 1 <= size <= 500:
            raise SimError(1201, "pageNum must be 1..1000 and pageSize 1..500")
        with self._lock:
            self.refresh()
            mine = [t for t in self.tasks.values() if t.endpoint == endpoint and t.standard == "legacy"]
            mine.sort(key=lambda t: (t.created_at, t.task_id), reverse=True)
            return [t.to_json() for t in mine[(page - 1) * size : page * size]]

    def tasks_by_ids(self, task_ids: list[str], external: bool) -> list[dict[str, Any]]:
        """``GET /tasks``: the new-standard tasks of these ids, in the order asked (unknown ids
        and tasks created on the legacy standard are left out)."""
        with self._lock:
            self.refresh()
            index = self._by_external if external else self.tasks
            found = [index.get(ident) for ident in task_ids]
            return [t.new_json() for t in found if t is not None and t.standard == "new"]

    def list_new(self, body: object) -> dict[str, Any]:
        """``POST /tasks``: new-standard tasks by creation time, newest first, cursor-paged."""
        query = parse_query(body, keys=("status", "product_type"), default_limit=100)
        with self._lock:
            self.refresh()
            return page(
                [t for t in self.tasks.values() if t.standard == "new"],
                query,
                key=lambda t: (t.created_at, int(t.task_id)),
                values=lambda t: {"status": NEW_STATUS[t.status], "product_type": PRODUCT_TYPES[t.pack_type]},
                render=SimTask.new_json,
            )

    def billing(self, funding: str, body: object) -> dict[str, Any]:
        """``/account/billing/package`` (``unit``) or ``/balance`` (``cash``): one row per charged task."""
        with self._lock:
            self.refresh()
            return self.accounts.listing(funding, body)

    def costs(self, start: int, end: int, name: str | None) -> dict[str, Any]:
        """``/account/costs``: the packs whose life (purchase to expiry) meets ``[start, end]``
        (ms), ``remaining_quantity`` as it was ``costs_lag_ms`` ago."""
        if start > end:
            raise SimError(1201, "start_time must not be after end_time")
        with self._lock:
            self.refresh()
            now = self.now_ms()
            packs = [
                p.to_json(now, lag_ms=self.costs_lag_ms)
                for p in self.all_packs
                if p.purchase_time <= end and p.invalid_time >= start and (name is None or p.name == name)
            ]
            return {"code": 0, "msg": "", "resource_pack_subscribe_infos": packs}

    def drain_outbox(self) -> list[CallbackEvent]:
        with self._lock:
            events = list(self.outbox)
            self.outbox.clear()
            return events


@dataclass(frozen=True)
class _Work:
    """A create to admit: what to run, on which standard, for whom."""

    endpoint: str
    standard: str
    request: PriceRequest
    seconds: int
    output: str
    external: str | None
    callback_url: str | None
    key_name: str
    watermark: bool = False


def model_version(model: str) -> str:
    """What Kling counts concurrency by (with the pack type): a legacy id is the new id's version."""
    return VERSION_OF.get(model, model)


def _motion_seconds(value: Decimal | str) -> Decimal:
    try:
        seconds = Decimal(value)
    except ArithmeticError:
        raise ValidationError(f"motion_seconds {value!r} must be a number of seconds") from None
    if not seconds.is_finite() or not 0 < seconds <= 30:
        raise ValidationError(f"motion_seconds {value} must be more than 0 and at most 30")
    return seconds
