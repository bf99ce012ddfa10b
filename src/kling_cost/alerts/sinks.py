"""Sinks chosen by URL: every bad URL is a :class:`ConfigurationError` when it is configured."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigurationError
from .base import AlertSink, CallbackSink, LogSink, StderrSink, parse_level
from .email import EmailSink
from .webhook import SlackSink, WebhookSink, redact_url

__all__ = ["SCHEMES", "make_sinks", "sink_from_url"]

SCHEMES = ("log", "stderr", "https", "http", "slack", "slack+https", "slack+http", "smtp", "smtps", "apprise")
SLACK_HOST = "hooks.slack.com"

SinkLike = AlertSink | str | Callable[[Any], object]


def sink_from_url(url: str, *, secret: str | None = None, timeout: float | None = None) -> AlertSink:
    """The sink for ``url``:

    ``log://[logger][?level=warning]`` (the default), ``stderr://``, ``https://...`` (a JSON
    webhook; ``?secret=whsec_...`` or ``secret=`` signs it), ``https://hooks.slack.com/...`` or
    ``slack://T/B/X`` (Slack), ``smtp://user:pass@host:port?to=a@b&from=c@d&starttls=1`` or
    ``smtps://...`` (e-mail), ``apprise://<apprise URL>`` (the ``notify`` extra).
    ``secret`` is the webhook signing secret for URLs without ``?secret=``.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"sink URL must be a non-empty string, not {url!r}")
    url = url.strip()
    try:
        parts = urlsplit(url)  # an unclosed IPv6 bracket raises here
    except ValueError as exc:
        raise ConfigurationError(f"sink URL {redact_url(url)!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if "://" not in url or scheme not in SCHEMES:
        raise ConfigurationError(
            f"sink URL {redact_url(url)!r} has an unknown scheme {scheme or '(none)'!r}; use one of: "
            "log://, stderr://, https://..., slack://..., smtp://..., smtps://..., apprise://..."
        )
    if scheme == "log":
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"level"}
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(sorted(unknown))} in {redact_url(url)!r}; allowed: level"
            )
        logger = (parts.netloc + parts.path).strip("/") or "kling_cost.alerts"
        return LogSink(logger, parse_level(options.get("level", "warning")))
    if scheme == "stderr":
        if parts.netloc or parts.path.strip("/") or parts.query:
            raise ConfigurationError("stderr:// takes no host, path or options: write it as stderr://")
        return StderrSink()
    if scheme in ("http", "https"):
        if (parts.hostname or "").lower() == SLACK_HOST:
            return SlackSink(url, timeout=timeout)
        return WebhookSink(url, secret=secret, timeout=timeout)
    if scheme == "slack":
        path = (parts.netloc + parts.path).strip("/")
        if path.count("/") != 2 or parts.query:
            raise ConfigurationError(
                f"Slack sink {redact_url(url)!r} must be slack://T.../B.../<token> (the three parts of "
                "the incoming webhook's URL) or https://hooks.slack.com/services/..."
            )
        return SlackSink(f"https://{SLACK_HOST}/services/{path}", timeout=timeout)
    if scheme in ("slack+http", "slack+https"):
        return SlackSink(url[len("slack+") :], timeout=timeout)
    if scheme in ("smtp", "smtps"):
        return EmailSink(url) if timeout is None else EmailSink(url, timeout=timeout)
    from .apprise_sink import AppriseSink

    return AppriseSink(url)


def make_sinks(
    sinks: Iterable[SinkLike] | SinkLike | None,
    *,
    secret: str | None = None,
    timeout: float | None = None,
) -> list[AlertSink]:
    """Sinks from URLs, ready sinks and callables (wrapped in :class:`CallbackSink`);
    ``None`` gives the default, ``log://``."""
    if sinks is None:
        return [LogSink()]
    if isinstance(sinks, (str, AlertSink)) or callable(sinks):
        sinks = [sinks]
    out: list[AlertSink] = []
    for item in sinks:
        if isinstance(item, AlertSink):
            out.append(item)
        elif isinstance(item, str):
            out.append(sink_from_url(item, secret=secret, timeout=timeout))
        elif callable(item):
            out.append(CallbackSink(item))
        else:
            raise ConfigurationError(f"a sink must be a URL, an AlertSink or a callable, not {item!r}")
    # Names show only kind, scheme and host, so two destinations can share one (two Slack
    # channels, two webhooks of one host): the later ones get #2, #3 ... in the order given,
    # and each keeps its own delivery record. The same destination twice is a mistake.
    counts: dict[str, int] = {}
    destinations: set[str] = set()
    for sink in out:
        destination = sink.identity or sink.name
        if destination in destinations and not isinstance(sink, CallbackSink):
            raise ConfigurationError(f"sink {sink.name} is configured twice")
        destinations.add(destination)
        seen = counts.get(sink.name, 0)
        counts[sink.name] = seen + 1
        if seen:
            sink.name = f"{sink.name}#{seen + 1}"
    return out
