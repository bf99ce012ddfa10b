"""Kling's task callbacks: check the signature, then read the task.

The signature primitives live in :mod:`kling_cost.signing`, shared with the alert webhooks;
they are importable from here too, as they always were.
"""

from __future__ import annotations

import json
from decimal import Decimal

from pydantic import ValidationError as PydanticValidationError

from ..errors import ServerError, ValidationError
from ..signing import TOLERANCE, sign_webhook, verify_webhook, webhook_key
from .models import KlingTask
from .new_standard import NewStandardTask

__all__ = ["TOLERANCE", "parse_callback", "sign_webhook", "verify_webhook", "webhook_key"]


def parse_callback(body: bytes | str) -> KlingTask | NewStandardTask:
    """The task a callback carries, on either standard: a legacy callback posts the legacy task
    object (``task_id``, ``task_status``, ``final_unit_deduction``) and gives a
    :class:`KlingTask`; a new-standard callback posts the bare new task object (``id``,
    ``status``, ``outputs``, ``billing``; no envelope) and gives a :class:`NewStandardTask`.

    A body that is not JSON, or not a task, is an unreadable answer from Kling:
    :class:`~kling_cost.errors.ServerError`, as from the client. ``body`` is the raw body
    (``bytes`` or ``str``); anything else is a :class:`~kling_cost.errors.ValidationError`.
    """
    if not isinstance(body, (bytes, bytearray, str)):
        raise ValidationError(f"a callback body must be the raw bytes (or str), not {type(body).__name__}")
    try:
        payload = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:  # also a body that is not UTF-8, or nested too deep
        raise ServerError("the callback body is not JSON") from exc
    if not isinstance(payload, dict):
        raise ServerError("the callback body is not a JSON object")
    model: type[KlingTask] | type[NewStandardTask] = KlingTask if "task_id" in payload else NewStandardTask
    try:
        return model.model_validate(payload)
    except PydanticValidationError as exc:
        raise ServerError(f"the callback body does not have the shape of a Kling task: {exc}") from exc
