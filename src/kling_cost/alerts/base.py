"""The sink interface, and the sinks that need nothing but the standard library."""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError, SinkError
from .message import AlertMessage
from .redact import scrub_urls

__all__ = ["AlertSink", "CallbackSink", "LogSink", "SinkError", "StderrSink"]

LOGGER = "kling_cost.alerts"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class AlertSink(ABC):
    """Somewhere alerts go. ``send`` raises (any exception) when the message was not accepted."""

    name: str = "sink"
    """Stable and free of secrets (kind, scheme and host, e.g. ``webhook:https://example.com``):
    it is stored with each alert to remember who accepted it, logged and shown."""
    sends_resolved: bool = True
    """Whether this sink also gets the "resolved" message when an alert is cleared."""
    identity: str | None = None
    """The destination itself (may hold secrets; memory only), to refuse one configured twice;
    ``None``: the name."""

    @abstractmethod
    def send(self, message: AlertMessage) -> None:
        """Deliver ``message``; return only when the receiver accepted it."""

    def redact(self, text: str) -> str:
        """``text`` (an error about this sink) without its secrets, fit to store and show."""
        return scrub_urls(text)

    def close(self) -> None:  # noqa: B027 - optional: most sinks hold nothing
        """Release connections."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def parse_level(value: str) -> int:
    level = _LEVELS.get(value.lower())
    if level is None:
        raise ConfigurationError(f"log level {value!r} is unknown; use one of: {', '.join(_LEVELS)}")
    return level


class LogSink(AlertSink):
    """``log://[logger.name][?level=warning]``: one log record per message via :mod:`logging`.

    The default sink. Without any logging configuration Python still shows warnings on stderr.
    """

    def __init__(self, logger: str = LOGGER, level: int | str = logging.WARNING) -> None:
        self.logger = logging.getLogger(logger)
        self.level = parse_level(level) if isinstance(level, str) else level
        self.name = f"log://{logger}"

    def send(self, message: AlertMessage) -> None:
        prefix = "ALERT: " if message.event == "alert" else ""
        self.logger.log(self.level, "%s%s", prefix, message.text, extra={"alert": message.to_dict()})


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirections are honoured)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging's contract: never raise from emit
            self.handleError(record)


_stderr_logger = logging.getLogger(LOGGER + ".stderr")
_stderr_logger.propagate = False
_stderr_logger.setLevel(logging.INFO)
if not _stderr_logger.handlers:
    _stderr_logger.addHandler(_CurrentStderr())


class StderrSink(LogSink):
    """``stderr://``: ``ALERT: <text>`` lines on standard error (whatever logging is configured)."""

    def __init__(self) -> None:
        super().__init__(_stderr_logger.name, logging.WARNING)
        self.name = "stderr://"


class CallbackSink(AlertSink):
    """A Python callable. It gets the :class:`AlertMessage` (or, with ``text=True``, its
    one-line text, like the seed's ``BudgetGuard._on_alert(message)``); raising means "not
    accepted, try again later". ``resolved=False`` keeps "resolved" messages from it."""

    def __init__(
        self,
        fn: Callable[[Any], object],
        *,
        text: bool = False,
        resolved: bool = True,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"CallbackSink needs a callable, not {type(fn).__name__}")
        self.fn = fn
        self.text = text
        self.sends_resolved = resolved
        label = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        self.name = f"callback:{label}"

    def send(self, message: AlertMessage) -> None:
        self.fn(message.text if self.text else message)
