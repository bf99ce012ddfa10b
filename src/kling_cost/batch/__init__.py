"""Batches: plan them before sending (total, what fits, cheaper alternatives), then run them."""

from .plan import Alternative, BatchPlan, plan_batch, to_price_request
from .rows import BatchRow, read_batch
from .run import BatchResult, BatchRunner, BatchSummary

__all__ = [
    "Alternative",
    "BatchPlan",
    "BatchResult",
    "BatchRow",
    "BatchRunner",
    "BatchSummary",
    "plan_batch",
    "read_batch",
    "to_price_request",
]
