"""Kling's request and response documents, with Kling's own field names (pydantic v2).

Responses are parsed leniently (unknown fields are kept, ``extra="allow"``) so a new field
from Kling never breaks a client; money fields are exact: ``final_unit_deduction`` and the
pack quantities become :class:`~decimal.Decimal`, never ``float``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "TERMINAL_STATUSES",
    "AccountCosts",
    "AdvancedLipSyncRequest",
    "EffectsInput",
    "EffectsRequest",
    "FaceChoice",
    "FaceData",
    "FaceIdentification",
    "FinalBalanceDeduction",
    "ImageGenerationRequest",
    "ImageToVideoRequest",
    "KlingImage",
    "KlingRequest",
    "KlingResponse",
    "KlingTask",
    "KlingVideo",
    "LipSyncInput",
    "LipSyncRequest",
    "MultiImageToVideoRequest",
    "ResourcePack",
    "TaskInfo",
    "TaskResult",
    "TaskStatus",
    "TextToVideoRequest",
    "VideoExtendRequest",
    "VirtualTryOnRequest",
]

TaskStatus = Literal["submitted", "processing", "succeed", "failed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeed", "failed"})


def _exact(value: object) -> object:
    """Numbers from JSON become exact Decimals (floats through their shortest text)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


# --------------------------------------------------------------------------- responses


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class KlingResponse(_Doc):
    """The envelope of every answer: ``{"code", "message", "request_id", "data"}``."""

    code: int
    message: str = ""
    request_id: str | None = None
    data: Any = None


class TaskInfo(_Doc):
    external_task_id: str | None = None


class KlingVideo(_Doc):
    id: str
    url: str
    duration: str | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _duration_text(cls, value: object) -> object:
        return value if value is None or isinstance(value, str) else str(_exact(value))


class KlingImage(_Doc):
    index: int
    url: str


class TaskResult(_Doc):
    videos: list[KlingVideo] = Field(default_factory=list)
    images: list[KlingImage] = Field(default_factory=list)


class FinalBalanceDeduction(_Doc):
    """``final_balance_deduction: {quota, list_price}`` of a legacy task: what the account's
    cash balance paid and its list price (Kling gives no currency: the account's own)."""

    quota: Decimal = Decimal(0)
    list_price: Decimal | None = None

    @field_validator("quota", "list_price", mode="before")
    @classmethod
    def _amounts(cls, value: object) -> object:
        if value == "":
            return None
        return _exact(value)


class KlingTask(_Doc):
    """One generation task, as create, query, list and callbacks return it.

    ``created_at``/``updated_at`` are Unix milliseconds. ``final_unit_deduction`` is what
    Kling charged in resource-pack units (``None`` until Kling reports it; failed tasks cost
    nothing); a task the account's balance paid reports ``"0"`` units and the cash in
    ``final_balance_deduction`` (:attr:`paid_in_cash`).
    ``endpoint`` is not part of Kling's document: the client fills it in so
    :meth:`KlingClient.wait` knows where to poll.
    """

    task_id: str
    task_status: TaskStatus
    task_status_msg: str | None = None
    task_info: TaskInfo = Field(default_factory=TaskInfo)
    task_result: TaskResult | None = None
    created_at: int | None = None
    updated_at: int | None = None
    final_unit_deduction: Decimal | None = None
    final_balance_deduction: FinalBalanceDeduction | None = None
    endpoint: str | None = Field(default=None, exclude=True)

    @field_validator("final_unit_deduction", mode="before")
    @classmethod
    def _units(cls, value: object) -> object:
        if value == "":
            return None
        return _exact(value)

    @property
    def external_task_id(self) -> str | None:
        return self.task_info.external_task_id

    @property
    def done(self) -> bool:
        """The task has ended (``succeed`` or ``failed``); its cost is final."""
        return self.task_status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.task_status == "succeed"

    @property
    def failed(self) -> bool:
        return self.task_status == "failed"

    @property
    def videos(self) -> list[KlingVideo]:
        return [] if self.task_result is None else self.task_result.videos

    @property
    def images(self) -> list[KlingImage]:
        return [] if self.task_result is None else self.task_result.images

    @property
    def paid_in_cash(self) -> bool:
        """The account's balance paid (some of) this task: ``final_balance_deduction.quota`` > 0."""
        paid = self.final_balance_deduction
        return paid is not None and paid.quota > 0

    @property
    def charged(self) -> Decimal:
        """Units charged so far: ``final_unit_deduction`` for a succeeded task, else 0."""
        if self.task_status != "succeed" or self.final_unit_deduction is None:
            return Decimal(0)
        return self.final_unit_deduction


class ResourcePack(_Doc):
    resource_pack_name: str
    resource_pack_id: str
    resource_pack_type: Literal["decreasing_total", "constant_period"] | str
    total_quantity: Decimal
    remaining_quantity: Decimal
    purchase_time: int | None = None
    effective_time: int | None = None
    invalid_time: int | None = None
    status: Literal["toBeOnline", "online", "expired", "runOut"] | str

    @field_validator("total_quantity", "remaining_quantity", mode="before")
    @classmethod
    def _quantity(cls, value: object) -> object:
        return _exact(value)


class AccountCosts(_Doc):
    """``data`` of ``GET /account/costs``: the account's resource packs."""

    code: int = 0
    msg: str = ""
    resource_pack_subscribe_infos: list[ResourcePack] = Field(default_factory=list)


# --------------------------------------------------------------------------- requests


class KlingRequest(BaseModel):
    """Base of create bodies: fields left ``None`` are not sent; unknown fields pass through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    callback_url: str | None = None
    external_task_id: str | None = None

    def to_body(self) -> dict[str, Any]:
        """The JSON body Kling expects (``None`` fields dropped)."""
        return self.model_dump(mode="json", exclude_none=True)


class _DurationMixin(BaseModel):
    duration: str | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _duration_string(cls, value: object) -> object:
        """Kling wants the duration as a string: ``5`` is sent as ``"5"``."""
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return str(value)
        return value


class TextToVideoRequest(KlingRequest, _DurationMixin):
    model_name: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    mode: str | None = None
    aspect_ratio: str | None = None
    cfg_scale: float | None = None
    camera_control: dict[str, Any] | None = None
    sound: str | None = None


class ImageToVideoRequest(TextToVideoRequest):
    image: str | None = None
    image_tail: str | None = None
    static_mask: str | None = None
    dynamic_masks: list[dict[str, Any]] | None = None


class MultiImageToVideoRequest(KlingRequest, _DurationMixin):
    model_name: str | None = None
    image_list: list[dict[str, Any]] = Field(default_factory=list)
    prompt: str | None = None
    negative_prompt: str | None = None
    mode: str | None = None
    aspect_ratio: str | None = None


class VideoExtendRequest(KlingRequest):
    video_id: str
    prompt: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None


class LipSyncInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    video_id: str | None = None
    video_url: str | None = None
    mode: Literal["text2video", "audio2video"] | None = None
    text: str | None = None
    voice_id: str | None = None
    voice_language: str | None = None
    voice_speed: float | None = None
    audio_type: str | None = None
    audio_file: str | None = None
    audio_url: str | None = None


class LipSyncRequest(KlingRequest):
    input: LipSyncInput


class FaceChoice(BaseModel):
    """A ``face_choose[]`` item of advanced lip-sync: a face and the sound put on it
    (``audio_id`` or ``sound_file``; times in milliseconds)."""

    model_config = ConfigDict(extra="allow")

    face_id: str
    audio_id: str | None = None
    sound_file: str | None = None
    sound_start_time: int | None = None
    sound_end_time: int | None = None
    sound_insert_time: int | None = None
    sound_volume: float | None = None
    original_audio_volume: float | None = None


class AdvancedLipSyncRequest(KlingRequest):
    """``POST /v1/videos/advanced-lip-sync``: the second step, after ``identify-face``."""

    session_id: str
    face_choose: list[FaceChoice]


class FaceData(_Doc):
    face_id: str
    face_image: str | None = None
    start_time: int | None = None
    end_time: int | None = None


class FaceIdentification(_Doc):
    """``data`` of ``POST /v1/videos/identify-face`` (synchronous): the session to lip-sync
    in and the faces found (times in milliseconds)."""

    session_id: str
    face_data: list[FaceData] = Field(default_factory=list)


class EffectsInput(_DurationMixin):
    model_config = ConfigDict(extra="allow")

    model_name: str | None = None
    mode: str | None = None
    image: str | None = None
    images: list[str] | None = None


class EffectsRequest(KlingRequest):
    effect_scene: str
    input: EffectsInput = Field(default_factory=EffectsInput)


class ImageGenerationRequest(KlingRequest):
    model_name: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    image: str | None = None
    image_reference: str | None = None
    image_fidelity: float | None = None
    resolution: str | None = None
    n: int | None = None
    aspect_ratio: str | None = None


class VirtualTryOnRequest(KlingRequest):
    model_name: str | None = None
    human_image: str
    cloth_image: str
