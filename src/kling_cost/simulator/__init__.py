"""A Kling-compatible server for demos and tests (``kling-cost simulate``)."""

from .app import ENDPOINT_ROUTES, NEW_ROUTES, Simulator, create_app
from .billing import Accounts, Balance
from .callbacks import CallbackSender, Delivery, signature
from .clock import Clock, ManualClock, SystemClock
from .errors import SimError
from .state import SimulatorState
from .tasks import Charge, Fault, Pack, SimTask

__all__ = [
    "ENDPOINT_ROUTES",
    "NEW_ROUTES",
    "Accounts",
    "Balance",
    "CallbackSender",
    "Charge",
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
