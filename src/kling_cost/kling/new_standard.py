"""Kling's 2026 "new design standard" documents (pydantic v2), with Kling's own field names.

The task object of ``POST /{family}/{model}``, ``GET /tasks``, ``POST /tasks`` and the new
callbacks (``{id, status, message, create_time, update_time, external_id, outputs, billing}``),
its ``outputs[]`` and ``billing[]`` items, the cursor pages of ``POST /tasks`` and
``POST /account/billing/package|balance``, and the create body (``prompt`` or ``contents[]``
+ ``settings`` + ``options``). Parsed leniently like the legacy models (unknown fields are
kept), except where money is concerned: every amount is an exact :class:`~decimal.Decimal`,
and a ``billing[]`` entry whose ``charge_type`` is neither ``unit`` nor ``cash`` is refused
(an amount means nothing without its kind, so it is never guessed).

:class:`NewStandardTask` also answers the legacy task's questions (``task_id``,
``task_status``, ``done``, ``succeeded``, ``failed``, ``videos``, ``charged``,
``external_task_id``), so code that waits for and reads tasks works on both standards.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

__all__ = [
    "NEW_TERMINAL_STATUSES",
    "AudioOutput",
    "BalanceDeduction",
    "BillingEntry",
    "BillingRow",
    "CashCharge",
    "ContentItem",
    "CursorPage",
    "ImageOutput",
    "NewStandardRequest",
    "NewStandardTask",
    "NewTaskStatus",
    "OtherOutput",
    "Output",
    "PackageDeduction",
    "TaskOptions",
    "UnitCharge",
    "VideoOutput",
    "VideoSettings",
    "WatermarkInfo",
]

NewTaskStatus = Literal["submitted", "processing", "succeeded", "failed"]
NEW_TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed"})


def _exact(value: object) -> object:
    """Numbers from JSON become exact Decimals (floats through their shortest text)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def _charge(value: object) -> object:
    """A ``billing[]`` amount: exact, and never below zero (a negative "charge" would commit
    less than Kling billed, or nothing, for a task it charged; Kling documents none)."""
    value = _exact(value)
    if isinstance(value, (int, str, Decimal)) and not isinstance(value, bool):
        try:
            number = Decimal(value.strip() if isinstance(value, str) else value)
        except ArithmeticError:
            return value  # not a number: pydantic names it
        if number.is_signed() and number.is_finite() and number != 0:
            raise ValueError(f"a billing amount must not be negative, got {value}")
    return value


def _text_number(value: object) -> object:
    """A length Kling writes as text (``"5.04"``); a JSON number is kept as its exact text."""
    if value is None or isinstance(value, (str, bool)):
        return value
    return str(_exact(value))


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- outputs[]


class VideoOutput(_Doc):
    """``{type: video, id, url, watermark_url, duration}`` (``duration`` in seconds, as text)."""

    type: Literal["video"] = "video"
    id: str | None = None
    url: str
    watermark_url: str | None = None
    duration: str | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _duration_text(cls, value: object) -> object:
        return _text_number(value)


class ImageOutput(_Doc):
    type: Literal["image"] = "image"
    url: str
    watermark_url: str | None = None
    group_id: str | None = None


class AudioOutput(_Doc):
    type: Literal["audio"] = "audio"
    id: str | None = None
    mp3_url: str | None = None
    wav_url: str | None = None


class OtherOutput(_Doc):
    """An output of a type this package does not know yet (kept, with all its fields)."""

    type: str


def _output_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("video", "image", "audio") else "other"


Output = Annotated[
    Annotated[VideoOutput, Tag("video")]
    | Annotated[ImageOutput, Tag("image")]
    | Annotated[AudioOutput, Tag("audio")]
    | Annotated[OtherOutput, Tag("other")],
    Discriminator(_output_tag),
]
"""One ``outputs[]`` item, by its ``type``."""


# --------------------------------------------------------------------------- billing[]


class UnitCharge(_Doc):
    """Resource-pack units: ``{charge_type: unit, amount: "8", package_type: video|image|audio}``."""

    charge_type: Literal["unit"]
    amount: Decimal
    package_type: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _exact_amount(cls, value: object) -> object:
        return _charge(value)


class CashCharge(_Doc):
    """Account balance: ``{charge_type: cash, cash_type: balance|test_balance, amount, currency,
    list_price}`` (``amount`` and ``list_price`` in ``currency``, USD or CNY)."""

    charge_type: Literal["cash"]
    amount: Decimal
    cash_type: str | None = None
    currency: str | None = None
    list_price: Decimal | None = None

    @field_validator("amount", "list_price", mode="before")
    @classmethod
    def _exact_amounts(cls, value: object) -> object:
        return None if value == "" else _charge(value)


BillingEntry = Annotated[UnitCharge | CashCharge, Field(discriminator="charge_type")]
"""One ``billing[]`` entry: :class:`UnitCharge` or :class:`CashCharge` (nothing else is read)."""


# --------------------------------------------------------------------------- the task


class NewStandardTask(_Doc):
    """One task of the new standard, as create, ``GET /tasks``, ``POST /tasks`` and callbacks
    give it. Times are Unix milliseconds; ``billing`` is empty until the task is charged (and
    stays empty for a failed task). ``endpoint`` is not Kling's: the client fills in the create
    path (``/text-to-video/kling-3.0``) when it knows it."""

    id: str
    status: NewTaskStatus
    message: str | None = None
    create_time: int | None = None
    update_time: int | None = None
    external_id: str | None = None
    outputs: list[Output] = Field(default_factory=list)
    billing: list[BillingEntry] = Field(default_factory=list)
    endpoint: str | None = Field(default=None, exclude=True)

    @field_validator("outputs", "billing", mode="before")
    @classmethod
    def _null_list(cls, value: object) -> object:
        return [] if value is None else value

    # the legacy task's questions, so waiting and reading work on both standards
    @property
    def task_id(self) -> str:
        return self.id

    @property
    def task_status(self) -> str:
        return self.status

    @property
    def task_status_msg(self) -> str | None:
        return self.message

    @property
    def external_task_id(self) -> str | None:
        return self.external_id

    @property
    def done(self) -> bool:
        """The task has ended (``succeeded`` or ``failed``)."""
        return self.status in NEW_TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def videos(self) -> list[VideoOutput]:
        return [o for o in self.outputs if isinstance(o, VideoOutput)]

    @property
    def images(self) -> list[ImageOutput]:
        return [o for o in self.outputs if isinstance(o, ImageOutput)]

    @property
    def audios(self) -> list[AudioOutput]:
        return [o for o in self.outputs if isinstance(o, AudioOutput)]

    @property
    def unit_charges(self) -> list[UnitCharge]:
        return [b for b in self.billing if isinstance(b, UnitCharge)]

    @property
    def cash_charges(self) -> list[CashCharge]:
        return [b for b in self.billing if isinstance(b, CashCharge)]

    @property
    def units(self) -> Decimal:
        """The resource-pack units billed: the sum of every ``unit`` entry (0 when none)."""
        return sum((b.amount for b in self.unit_charges), Decimal(0))

    def cash(self) -> dict[str, Decimal]:
        """The cash billed, per currency (``{"USD": Decimal("1.12")}``); entries without a
        currency are under ``""``."""
        out: dict[str, Decimal] = {}
        for entry in self.cash_charges:
            currency = entry.currency or ""
            out[currency] = out.get(currency, Decimal(0)) + entry.amount
        return out

    @property
    def charged(self) -> Decimal:
        """Units charged: the ``unit`` entries of ``billing[]`` (cash is not units: see :meth:`cash`)."""
        return self.units


# --------------------------------------------------------------------------- cursor pages

RowT = TypeVar("RowT")


class CursorPage(_Doc, Generic[RowT]):
    """One page of a cursor listing: ``{result, count, next_cursor, has_more}``."""

    result: list[RowT] = Field(default_factory=list)
    count: int = 0
    next_cursor: str | None = None
    has_more: bool = False

    @field_validator("result", mode="before")
    @classmethod
    def _null_result(cls, value: object) -> object:
        return [] if value is None else value


class BillingRow(_Doc):
    """What both billing listings share: one row per charged task."""

    task_id: str
    api_key_name: str | None = None
    product_function: str | None = None
    model_name: str | None = None
    resolution: str | None = None
    duration: str | None = None
    video_sound: str | None = None
    voice_control: str | None = None
    deduction_time: int | None = None
    product_type: str | None = None
    deduction_amount: Decimal

    @field_validator("duration", mode="before")
    @classmethod
    def _duration_text(cls, value: object) -> object:
        return _text_number(value)

    @field_validator("deduction_amount", mode="before")
    @classmethod
    def _exact_amount(cls, value: object) -> object:
        return _exact(value)


class PackageDeduction(BillingRow):
    """A row of ``POST /account/billing/package``: units taken from a resource pack."""

    package_id: str | None = None
    package_name: str | None = None
    unit_before_deduction: Decimal | None = None
    unit_after_deduction: Decimal | None = None

    @field_validator("unit_before_deduction", "unit_after_deduction", mode="before")
    @classmethod
    def _exact_units(cls, value: object) -> object:
        return _exact(value)


class BalanceDeduction(BillingRow):
    """A row of ``POST /account/billing/balance``: cash taken from the account balance
    (``deduction_amount`` and ``list_price`` in ``currency``)."""

    balance_before_deduction: Decimal | None = None
    balance_after_deduction: Decimal | None = None
    list_price: Decimal | None = None
    currency: str | None = None

    @field_validator("balance_before_deduction", "balance_after_deduction", "list_price", mode="before")
    @classmethod
    def _exact_cash(cls, value: object) -> object:
        return _exact(value)


# --------------------------------------------------------------------------- requests


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ContentItem(_Part):
    """A ``contents[]`` item: ``prompt {text}``, ``first_frame``/``last_frame``/``refer_image``
    ``{url}``, ``feature_video``/``base_video`` ``{url}`` (omni), ``element {element_id, id}``,
    ``voice {voice_id, id}``, ``image``/``video`` ``{url}`` (motion control)."""

    type: str
    text: str | None = None
    url: str | None = None
    id: str | None = None
    element_id: str | None = None
    voice_id: str | None = None


class VideoSettings(_Part):
    """``settings``: ``resolution`` (720p/1080p/4k), ``duration`` (a JSON integer), ``audio``
    (native/original/off), ``aspect_ratio``, ``multi_shot``, ``character_orientation``."""

    resolution: str | None = None
    duration: int | None = None
    audio: str | None = None
    aspect_ratio: str | None = None
    multi_shot: bool | None = None
    character_orientation: str | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _whole(cls, value: object) -> object:
        """Kling wants a JSON integer: ``"10"`` is sent as ``10`` (``"10.5"`` is refused)."""
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value


class WatermarkInfo(_Part):
    enabled: bool = False


class TaskOptions(_Part):
    callback_url: str | None = None
    external_task_id: str | None = None
    watermark_info: WatermarkInfo | None = None


class NewStandardRequest(_Part):
    """A new-standard create body: ``prompt`` (text-to-video) or ``contents`` (the others),
    with ``settings`` and ``options``; fields left ``None`` are not sent."""

    prompt: str | None = None
    contents: list[ContentItem] | None = None
    settings: VideoSettings = Field(default_factory=VideoSettings)
    options: TaskOptions = Field(default_factory=TaskOptions)

    def to_body(self) -> dict[str, Any]:
        """The JSON body Kling expects (``None`` fields and empty ``settings``/``options`` dropped)."""
        body = self.model_dump(mode="json", exclude_none=True)
        for name in ("settings", "options"):
            if not body.get(name):
                body.pop(name, None)
        return body
