"""A Kling-compatible server for demos and tests (``kling-cost simulate``)."""

from .app import ENDPOINT_ROUTES, Simulator, create_app
from .callbacks import CallbackSender, Delivery, signature
from .clock import Clock, ManualClock, SystemClock
from .errors import SimError
from .state import SimulatorState
from .tasks import Fault, Pack, SimTask

__all__ = [
    "ENDPOINT_ROUTES",
    "CallbackSender",
    "Clock",
    "Delivery",
    "Fault",
    "ManualClock",
    "Pack",
    "SimError",
    "SimTask",
    "Simulator",
    "SimulatorState",
    "SystemClock",
    "create_app",
    "signature",
]
