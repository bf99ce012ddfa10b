"""What the guard, batches and the demo share with the client about tasks of either API
standard: the task type, how many ids one ``GET /tasks`` carries, whether an endpoint names a
new-standard task, and the JSON body a create sends. Public so that no module outside
``kling`` reaches into the client's private core."""

from __future__ import annotations

from ._core import IDS_PER_CALL, AnyTask, create_body, is_new_task_ref

__all__ = ["IDS_PER_CALL", "AnyTask", "create_body", "is_new_task_ref"]
