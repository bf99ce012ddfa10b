"""E-mail over SMTP: ``smtp://user:pass@host:port?to=a@b,c@d&from=x@y&starttls=1``."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigurationError
from .base import AlertSink, SinkError
from .message import AlertMessage
from .redact import Scrubber, transport_reason
from .webhook import redact_url, url_timeout

__all__ = ["EmailSink"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OPTIONS = ("to", "from", "starttls", "timeout", "subject_prefix")


def _flag(value: str, url: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigurationError(f"starttls={value!r} in {redact_url(url)!r}; use 1 or 0")


def _addresses(raw: str, what: str, url: str) -> list[str]:
    found = [a.strip() for a in raw.split(",") if a.strip()]
    for address in found:
        if "@" not in address or " " in address:
            raise ConfigurationError(
                f"{what} address {address!r} in {redact_url(url)!r} is not an e-mail address"
            )
    return found


class EmailSink(AlertSink):
    """Sends one e-mail per message.

    ``smtp://`` (port 25 by default; ``?starttls=1`` upgrades the connection, port 587 by
    default then) or ``smtps://`` (implicit TLS, port 465). ``user:pass@`` logs in (URL-encode
    special characters). ``to`` (comma-separated) is required; ``from`` defaults to
    ``kling-cost@<host>``; ``subject_prefix`` defaults to ``[kling-cost]``.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError(f"e-mail sink URL {redact_url(url)!r} must be smtp://host[:port]?to=...")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"e-mail sink URL {redact_url(url)!r} has an invalid port") from None
        options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _OPTIONS:
                raise ConfigurationError(
                    f"unknown option {key!r} in {redact_url(url)!r}; allowed: {', '.join(_OPTIONS)}"
                )
            options[key] = value
        self.to = _addresses(options.get("to", ""), "to", url)
        if not self.to:
            raise ConfigurationError(f"e-mail sink URL {redact_url(url)!r} needs ?to=address[,address]")
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = _flag(options.get("starttls", "0"), url)
        if self.implicit_tls and self.starttls:
            raise ConfigurationError(f"{redact_url(url)!r}: smtps:// is already TLS; drop starttls=1")
        self.host = parts.hostname
        self.port = port or (465 if self.implicit_tls else 587 if self.starttls else 25)
        self.user = None if parts.username is None else unquote(parts.username)
        self.password = None if parts.password is None else unquote(parts.password)
        sender = options.get("from") or f"kling-cost@{self.host}"
        self.sender = _addresses(sender, "from", url)[0]
        self.subject_prefix = options.get("subject_prefix", "[kling-cost]")
        if "timeout" in options:
            timeout = url_timeout(options["timeout"], url)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.name = f"email:{parts.scheme}://{self.host}:{self.port}"
        self.identity = f"{parts.scheme}://{self.user or ''}@{self.host}:{self.port}?to={','.join(self.to)}"
        self._scrub = Scrubber([url], [self.password, parts.password])

    def redact(self, text: str) -> str:
        return self._scrub(text)

    def compose(self, message: AlertMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = f"{self.subject_prefix} {message.title}".strip()
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(idstring=message.id, domain=self.sender.split("@")[1])
        mail.set_content(message.body())
        return mail

    def send(self, message: AlertMessage) -> None:
        mail = self.compose(message)
        context = self.ssl_context or ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if self.implicit_tls:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=context)
                if self.user is not None:
                    smtp.login(self.user, self.password or "")
                refused = smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise SinkError(f"{self.name}: {_reason(exc)}") from None
        if refused:
            raise SinkError(f"{self.name}: {len(refused)} recipient(s) refused")


def _reason(exc: BaseException) -> str:
    """A few words and the SMTP code, never the server's text (it may quote the login)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"login refused (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"{len(exc.recipients)} recipient(s) refused"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"sender refused (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return "the server does not support a requested extension (STARTTLS or AUTH)"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    return transport_reason(exc)
