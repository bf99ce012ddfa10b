"""Alert settings from a TOML file (``KLING_COST_CONFIG`` or ``--config``) and flags.

::

    [alerts]
    sinks = ["log://", "https://example.com/hooks/kling?secret=whsec_...", "smtp://..."]
    dashboard_url = "http://127.0.0.1:8787/?scope={scope}"
    webhook_secret = "whsec_..."     # signs webhooks whose URL has no ?secret=
    timeout = 10                     # seconds per HTTP/SMTP attempt
    retry_base = 5                   # seconds before the first retry, then x retry_factor ...
    retry_factor = 2
    retry_max = 3600                 # ... up to this
    lease = 120                      # seconds a claimed alert stays with one deliverer
    interval = 1                     # seconds between passes of a background/looping deliverer

Every sink URL is checked when the settings are built: a bad one raises
:class:`~kling_cost.errors.ConfigurationError` naming it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..ledger import Ledger
from .base import AlertSink
from .deliver import Backoff, Deliverer, check_seconds
from .sinks import make_sinks

__all__ = ["ENV_CONFIG", "AlertsConfig", "load_config"]

ENV_CONFIG = "KLING_COST_CONFIG"


def _seconds(data: Mapping[str, Any], key: str, default: float, *, zero: bool = True) -> float:
    return check_seconds(data.get(key, default), f"[alerts] {key}", zero=zero)


@dataclass(frozen=True)
class AlertsConfig:
    """Where alerts go and how they are retried."""

    sinks: tuple[str, ...] = field(default=("log://",), repr=False)  # URLs may hold tokens
    dashboard_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    lease: timedelta = timedelta(minutes=2)
    interval: float = 1.0

    def __post_init__(self) -> None:
        self.build_sinks()  # every URL is checked now, not at the first alert

    def build_sinks(self, extra: Iterable[AlertSink] = ()) -> list[AlertSink]:
        """The configured sinks and ``extra`` ones (the batch's terminal), the extra ones first
        so that a slow webhook never delays them. Names are given in the other order: a
        configured sink is named as without extras (``sent_to`` remembers sinks by name, and
        ``kling-cost alerts deliver`` builds the configured ones alone); an extra sink sharing
        its name gets the ``#2``."""
        extra = list(extra)
        named = make_sinks([*self.sinks, *extra], secret=self.webhook_secret, timeout=self.timeout)
        configured = len(named) - len(extra)
        return [*named[configured:], *named[:configured]]

    def with_sinks(self, sinks: Iterable[str]) -> AlertsConfig:
        """The same settings with other sink URLs (``--sink`` flags replace the file's)."""
        return replace(self, sinks=tuple(sinks))

    def deliverer(self, ledger: Ledger, extra: Iterable[AlertSink] = ()) -> Deliverer:
        return Deliverer(
            ledger,
            self.build_sinks(extra),
            dashboard_url=self.dashboard_url,
            backoff=self.backoff,
            lease=self.lease,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "configuration") -> AlertsConfig:
        known = {
            "sinks",
            "dashboard_url",
            "webhook_secret",
            "timeout",
            "retry_base",
            "retry_factor",
            "retry_max",
            "lease",
            "interval",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"{source}: unknown [alerts] setting(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        sinks = data.get("sinks", ["log://"])
        if isinstance(sinks, str):
            sinks = [sinks]
        if not isinstance(sinks, list) or not all(isinstance(s, str) for s in sinks):
            raise ConfigurationError(f"{source}: [alerts] sinks must be a list of URLs")
        for key in ("dashboard_url", "webhook_secret"):
            if key in data and not isinstance(data[key], str):
                raise ConfigurationError(f"{source}: [alerts] {key} must be a string")
        factor = data.get("retry_factor", 2)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 1000:
            raise ConfigurationError(f"{source}: [alerts] retry_factor must be a number from 1 to 1000")
        try:
            return cls(
                sinks=tuple(sinks),
                dashboard_url=data.get("dashboard_url") or None,
                webhook_secret=data.get("webhook_secret") or None,
                timeout=_seconds(data, "timeout", 10.0, zero=False),
                backoff=Backoff(
                    timedelta(seconds=_seconds(data, "retry_base", 5.0)),
                    float(factor),
                    timedelta(seconds=_seconds(data, "retry_max", 3600.0)),
                ),
                lease=timedelta(seconds=_seconds(data, "lease", 120.0, zero=False)),
                interval=_seconds(data, "interval", 1.0, zero=False),
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> AlertsConfig:
    """The ``[alerts]`` table of ``path``, else of ``$KLING_COST_CONFIG``, else the defaults."""
    chosen = path if path is not None else os.environ.get(ENV_CONFIG) or None
    if chosen is None:
        return AlertsConfig()
    file = Path(chosen).expanduser()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the configuration file {file}: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file}: not valid TOML: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file}: not valid TOML: {exc}") from None
    section = data.get("alerts", {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{file}: [alerts] must be a table")
    return AlertsConfig.from_mapping(section, str(file))
