"""Any notification service Apprise knows (``pip install 'klingai-cost-controls[notify]'``)."""

from __future__ import annotations

import logging
import re
import threading
import warnings
from typing import Any

from ..errors import ConfigurationError
from ..ledger.outbox_store import PHASE_RESOLVED
from .base import AlertSink, SinkError
from .message import AlertMessage
from .redact import MAX_REASON, Scrubber
from .webhook import redact_url

__all__ = ["AppriseSink"]

PREFIX = "apprise://"
_LOG_PREFIX = re.compile(r"^\s*\d{4}-\d\d-\d\d[ T][\d:.,]+\s+-\s+[A-Z]+\s+-\s+")


def _apprise() -> Any:
    try:
        with warnings.catch_warnings():
            # Apprise's plugins import modules the standard library deprecates (imghdr).
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise
    except ImportError as exc:
        raise ConfigurationError(
            "apprise:// sinks need Apprise: pip install 'klingai-cost-controls[notify]'"
        ) from exc
    return apprise


class AppriseSink(AlertSink):
    """``apprise://<any Apprise URL>``, e.g. ``apprise://discord://id/token`` or
    ``apprise://tgram://bot/chat``: the part after ``apprise://`` is given to Apprise as is."""

    def __init__(self, url: str) -> None:
        target = url[len(PREFIX) :] if url.startswith(PREFIX) else url
        if "://" not in target:
            raise ConfigurationError(
                f"Apprise sink {redact_url(url)!r} must be apprise://<apprise URL>, e.g. apprise://json://host/path"
            )
        self._lib = _apprise()
        self._lock = threading.Lock()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._apobj = self._lib.Apprise()
            added = self._apobj.add(target)
        if not added:
            raise ConfigurationError(
                f"Apprise does not accept {redact_url(target)!r}; see https://github.com/caronc/apprise/wiki"
            )
        # Apprise URLs put tokens anywhere (tgram://BOTTOKEN/chat): the name is the service only.
        self.name = f"apprise:{target.partition('://')[0].lower()}"
        self.identity = target
        self._scrub = Scrubber([target, url])

    def redact(self, text: str) -> str:
        return self._scrub(text)

    def send(self, message: AlertMessage) -> None:
        kind = (
            self._lib.NotifyType.SUCCESS if message.event == PHASE_RESOLVED else self._lib.NotifyType.WARNING
        )
        with self._lock, self._lib.LogCapture(level=logging.WARNING) as captured:
            ok = self._apobj.notify(body=message.body(), title=message.title, notify_type=kind)
        if not ok:
            first = next((line for line in captured.getvalue().splitlines() if line.strip()), "")
            first = _LOG_PREFIX.sub("", first)  # Apprise's "2026-11-30 11:28:28,176 - WARNING - "
            detail = self.redact(" ".join(first.split()))[:MAX_REASON] or "notification failed"
            raise SinkError(f"{self.name}: {detail}")
