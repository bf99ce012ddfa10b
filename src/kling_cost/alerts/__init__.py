"""Budget alerts: delivered from the ledger's outbox to log, webhook, Slack, e-mail, Apprise or Python.

The ledger writes one row per (budget, window, threshold) crossing into its outbox inside
the transaction that crossed it (:mod:`kling_cost.ledger.outbox`); this package delivers
those rows, with retries, and never touches spending.
"""

from __future__ import annotations

from ..ledger.outbox_store import Consumer
from .apprise_sink import AppriseSink
from .base import AlertSink, CallbackSink, LogSink, SinkError, StderrSink
from .config import ENV_CONFIG, AlertsConfig, load_config
from .deliver import Backoff, Deliverer, DeliveryReport
from .email import EmailSink
from .message import AlertMessage, build_message, sample_message
from .sinks import make_sinks, sink_from_url
from .webhook import SlackSink, WebhookSink

__all__ = [
    "ENV_CONFIG",
    "AlertMessage",
    "AlertSink",
    "AlertsConfig",
    "AppriseSink",
    "Backoff",
    "CallbackSink",
    "Consumer",
    "Deliverer",
    "DeliveryReport",
    "EmailSink",
    "LogSink",
    "SinkError",
    "SlackSink",
    "StderrSink",
    "WebhookSink",
    "build_message",
    "load_config",
    "make_sinks",
    "sample_message",
    "sink_from_url",
]
