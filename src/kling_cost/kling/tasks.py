"""What the guard, batches and the demo share with the client about tasks of either API
standard: the task type, how many ids one ``GET /tasks`` carries, whether an endpoint names a
new-standard task, and the JSON body a create sends. Public so that no module outside
``kling`` reaches into the client's private core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._core import IDS_PER_CALL, AnyTask, create_body, is_new_task_ref
from .models import KlingTask
from .new_standard import NewStandardTask

__all__ = ["IDS_PER_CALL", "AnyTask", "create_body", "is_new_task_ref", "parse_task"]


def parse_task(endpoint: str, doc: Mapping[str, Any]) -> AnyTask:
    """A task document (a query's ``data``, a callback body, a stored result) as the model of
    the standard ``endpoint`` belongs to (a new-standard create path or ``/tasks``: the new one),
    remembering ``endpoint``."""
    model: type[KlingTask] | type[NewStandardTask] = (
        NewStandardTask if is_new_task_ref(endpoint) else KlingTask
    )
    task = model.model_validate(doc)
    task.endpoint = endpoint
    return task
