"""HTTP sinks: a generic JSON webhook (Standard Webhooks signatures) and Slack incoming webhooks."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from ..errors import ConfigurationError
from ..ledger.outbox_store import PHASE_RESOLVED
from ..money import format_amount
from ..signing import sign_webhook, webhook_key
from .base import AlertSink, SinkError
from .message import AlertMessage
from .redact import Scrubber, origin, sink_label, transport_reason

__all__ = ["SlackSink", "WebhookSink", "redact_url", "url_timeout"]

DEFAULT_TIMEOUT = 10.0


def redact_url(url: str) -> str:
    """``url`` as configuration errors show it: scheme, host and port, the query's option names;
    no password, no path (webhook paths carry tokens), no query values."""
    try:
        parts = urlsplit(url)
        keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    except ValueError:
        return "(invalid URL)"
    host = parts.netloc.rsplit("@", 1)[-1]
    user = "***@" if "@" in parts.netloc else ""
    path = "/..." if parts.path.strip("/") else ""
    query = "?" + "&".join(f"{k}=***" for k in keys) if keys else ""
    return f"{parts.scheme}://{user}{host}{path}{query}"


def _check_http_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} URL {redact_url(url)!r} must be http(s)://host/path")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ConfigurationError(f"{what} URL {redact_url(url)!r} has an invalid port") from None


def url_timeout(value: object, url: str) -> float:
    """A sink URL's ``?timeout=`` in seconds: a number in (0, 600] (NaN and infinities refused)."""
    try:
        seconds = float(str(value))
    except ValueError:
        raise ConfigurationError(f"timeout in {redact_url(url)!r} must be a number of seconds") from None
    if not 0 < seconds <= 600:
        raise ConfigurationError(f"timeout in {redact_url(url)!r} must be between 0 and 600 seconds")
    return seconds


_HIDDEN_URLS: set[str] = set()
"""Every HTTP sink's target, as httpx prints it."""


class _HideSinkUrls(logging.Filter):
    """httpx logs every request's full URL (``HTTP Request: POST <url> ...``, at INFO); a
    sink's URL is a credential, so for those requests it logs ``scheme://host`` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, httpx.URL) and str(a) in _HIDDEN_URLS for a in args):
            record.args = tuple(
                origin(str(a)) if isinstance(a, httpx.URL) and str(a) in _HIDDEN_URLS else a for a in args
            )
        return True


_FILTER = _HideSinkUrls()


def _hide_in_httpx_log(url: str) -> None:
    _HIDDEN_URLS.add(str(httpx.URL(url)))
    logging.getLogger("httpx").addFilter(_FILTER)  # once: a logger keeps one copy of a filter


class _HttpSink(AlertSink):
    kind = "http"

    def __init__(self, url: str, timeout: float, *, secret: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.name = sink_label(self.kind, url)
        self.identity = url
        self._scrub = Scrubber([url], [secret])
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        _hide_in_httpx_log(url)

    def redact(self, text: str) -> str:
        return self._scrub(text)

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
            return self._client

    def _post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        # Only a status and a few words are kept: the receiver's answer may echo the request
        # (its URL, its token), and error texts of the HTTP stack may hold the URL.
        try:
            with self._http().stream("POST", self.url, content=body, headers=headers) as response:
                pass  # the answer's body is never read, let alone kept
        except httpx.HTTPError as exc:
            raise SinkError(f"{self.name}: {transport_reason(exc)}") from None
        if not 200 <= response.status_code < 300:
            phrase = httpx.codes.get_reason_phrase(response.status_code)
            raise SinkError(f"{self.name}: HTTP {response.status_code} {phrase}".strip())
        return response

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class WebhookSink(_HttpSink):
    """``https://host/path[?secret=whsec_...&timeout=10]``: POSTs the message as JSON.

    The body is ``{"type": "kling_cost.alert" | "kling_cost.alert.resolved", "timestamp":
    ISO-8601, "data": {...}}``. With a secret (``?secret=``, removed from the URL before
    posting, or ``secret=``) every request is signed Standard-Webhooks style: headers
    ``webhook-id`` (stable across retries), ``webhook-timestamp`` (Unix seconds) and
    ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``; ``whsec_`` secrets
    are base64-decoded first. Any 2xx answer means accepted.
    """

    kind = "webhook"

    def __init__(self, url: str, *, secret: str | None = None, timeout: float | None = None) -> None:
        _check_http_url(url, "webhook")
        parts = urlsplit(url)
        query = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "secret":  # this URL's own secret wins over the configured webhook_secret
                secret = value
            elif key == "timeout":  # this sink's own timeout wins over the configured default
                timeout = url_timeout(value, url)
            else:
                query.append((key, value))
        if secret is not None:
            if not secret:
                raise ConfigurationError(f"webhook secret of {redact_url(url)!r} is empty")
            try:
                webhook_key(secret)
            except ConfigurationError:
                raise ConfigurationError(
                    f"webhook secret of {redact_url(url)!r} starts with whsec_ but the rest is not base64"
                ) from None
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        super().__init__(target, timeout or DEFAULT_TIMEOUT, secret=secret)
        self.secret = secret

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        kind = "kling_cost.alert.resolved" if message.event == PHASE_RESOLVED else "kling_cost.alert"
        return {"type": kind, "timestamp": message.created_at.isoformat(), "data": message.to_dict()}

    def send(self, message: AlertMessage) -> None:
        body = json.dumps(self.payload(message), separators=(",", ":")).encode()
        headers = {"content-type": "application/json", "user-agent": "kling-cost-alerts"}
        if self.secret is not None:
            stamp = int(time.time())
            headers["webhook-id"] = message.id
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = sign_webhook(self.secret, message.id, stamp, body)
        self._post(body, headers)


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackSink(_HttpSink):
    """A Slack incoming webhook: ``https://hooks.slack.com/services/T/B/X`` or ``slack://T/B/X``
    (``slack+http(s)://host/path`` for Slack-compatible receivers such as Mattermost).

    Posts Slack's message format: ``text`` (the notification fallback) and ``blocks``.
    """

    kind = "slack"

    def __init__(self, url: str, *, timeout: float | None = None) -> None:
        _check_http_url(url, "Slack webhook")
        super().__init__(url, timeout or DEFAULT_TIMEOUT)

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        icon = ":white_check_mark:" if message.event == PHASE_RESOLVED else ":warning:"
        fields = [
            f"*Scope*\n{message.scope}",
            f"*Window*\n{message.window} {message.window_key}",
            f"*Used / limit*\n{format_amount(message.level)} / {message.amount(message.limit)} "
            f"({message.percent_used}%)",
            f"*Remaining*\n{message.amount(message.remaining)}",
        ]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {_mrkdwn(message.text)}"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": _mrkdwn(f)} for f in fields]},
        ]
        if message.top_consumers:
            rows = "\n".join(
                f"• {'model' if c.by == 'model' else 'scope'} `{_mrkdwn(c.name)}`: "
                f"{message.amount(c.amount)} ({c.count})"
                for c in message.top_consumers
            )
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Top consumers*\n{rows}"}})
        if message.dashboard_url:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open the dashboard"},
                            "url": message.dashboard_url,
                        }
                    ],
                }
            )
        return {"text": message.text, "blocks": blocks}

    def send(self, message: AlertMessage) -> None:
        body = json.dumps(self.payload(message)).encode()
        self._post(body, {"content-type": "application/json"})
