"""What a sink receives: one alert (or its "resolved" follow-up) with everything worth knowing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from ..budgets import Budget, window_at
from ..ledger.models import AlertRecord
from ..ledger.outbox import (
    KIND_FORECAST,
    KIND_MAX_PER_REQUEST,
    KIND_OVERAGE,
    KIND_PACK_EXPIRY,
    KIND_REFUSED,
    KIND_THRESHOLD,
    percent,
)
from ..ledger.outbox_store import PHASE_ALERT, PHASE_RESOLVED, Consumer
from ..money import MONEY, format_amount, format_quantity
from ..timestamps import to_ms

__all__ = ["AlertMessage", "Consumer", "build_message", "sample_message"]

ZERO = Decimal("0.000")


@dataclass(frozen=True)
class AlertMessage:
    """One alert, ready to send. ``str(message)`` is its one-line text."""

    id: str
    """Stable across retries of the same message (receivers can de-duplicate on it)."""
    event: str
    """``alert`` or ``resolved``."""
    kind: str
    """``threshold``, ``refused``, ``max_per_request``, ``overage``, ``forecast`` (the
    projection passes the limit) or ``pack-expiry`` (a resource pack expires with units unused)."""
    scope: str
    window: str
    window_key: str
    threshold: str
    used: Decimal
    reserved: Decimal
    limit: Decimal
    text: str
    created_at: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    top_consumers: tuple[Consumer, ...] = ()
    dashboard_url: str | None = None
    reason: str | None = None
    """Why a resolved alert no longer applies (the window ended, the limit was raised)."""
    alert_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    unit: str = "units"
    """What every amount of the message counts: the budget's unit (``units`` or ``credits``)."""

    def amount(self, value: Decimal) -> str:
        """``value`` with the unit: ``"400 credits"``."""
        return f"{format_quantity(value, self.unit)}"

    @property
    def level(self) -> Decimal:
        """Used plus reserved when the alert fired."""
        return MONEY.add(self.used, self.reserved)

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, MONEY.subtract(self.limit, self.level))

    @property
    def percent_used(self) -> str:
        """The level as a percentage of the limit, e.g. ``"85"``."""
        if not self.limit:
            return "0"
        return percent(MONEY.divide(self.level, self.limit).quantize(Decimal("0.001"), context=MONEY))

    def _detail(self, key: str) -> str:
        value = self.details.get(key)
        return value if isinstance(value, str) else "?"

    @property
    def title(self) -> str:
        """A short subject line."""
        what = f"{self.scope} {self.window} budget"
        if self.kind == KIND_PACK_EXPIRY:
            pack = f"resource pack {self._detail('pack_name')}"
            if self.event == PHASE_RESOLVED:
                return f"resolved: {pack} expiry"
            return (
                f"{pack} expires {self._detail('expires_at')[:10]} with "
                f"{self.amount(Decimal(self._detail('units_at_risk')))} at risk"
            )
        if self.event == PHASE_RESOLVED:
            head = f"resolved: {what}"
            if self.kind == KIND_FORECAST:
                return f"{head} forecast ({self.window_key})"
            if self.kind == KIND_THRESHOLD:
                return f"{head} back below {percent(Decimal(self.threshold))}%"
            if self.kind == KIND_OVERAGE:
                return f"{head} overage ({self.window_key})"
            return f"{head} refusals ({self.window_key})"
        if self.kind == KIND_THRESHOLD:
            return (
                f"{what} at {percent(Decimal(self.threshold))}% "
                f"({format_amount(self.level)} / {self.amount(self.limit)})"
            )
        if self.kind == KIND_MAX_PER_REQUEST:
            return f"{what}: request above the per-request maximum"
        if self.kind == KIND_FORECAST:
            return (
                f"{what}: heading for {format_amount(Decimal(self._detail('projected')))} "
                f"/ {self.amount(self.limit)} by the end of {self.window_key}"
            )
        if self.kind == KIND_OVERAGE:
            over = self.details.get("overage")
            by = f" by {self.amount(Decimal(over))}" if isinstance(over, str) else ""
            return f"{what}: over its limit{by} ({format_amount(self.level)} / {self.amount(self.limit)})"
        return f"{what}: request refused ({format_amount(self.level)} / {self.amount(self.limit)})"

    def __str__(self) -> str:
        return self.text

    def lines(self) -> list[str]:
        """The full text, line by line (e-mail bodies, logs, Apprise)."""
        out = [self.text, ""]
        if self.kind == KIND_PACK_EXPIRY:
            return out + self._pack_lines()
        out.append(f"Scope:      {self.scope}")
        span = ""
        if self.window_start is not None and self.window_end is not None:
            span = f" ({self.window_start.isoformat()} to {self.window_end.isoformat()})"
        out.append(f"Window:     {self.window} {self.window_key}{span}")
        if self.kind == KIND_THRESHOLD:
            out.append(f"Threshold:  {percent(Decimal(self.threshold))}%")
        if self.kind == KIND_OVERAGE and isinstance(self.details.get("overage"), str):
            out.append(
                f"Overage:    {self.amount(Decimal(self.details['overage']))} past the limit "
                f"(a charge of {self.details.get('actual')} on an estimate of {self.details.get('estimate')})"
            )
        out.append(
            f"Used:       {format_amount(self.used)} used + {format_amount(self.reserved)} reserved "
            f"= {format_amount(self.level)} of {self.amount(self.limit)} ({self.percent_used}%)"
        )
        out.append(f"Remaining:  {self.amount(self.remaining)}")
        if self.kind == KIND_FORECAST:
            out.append(
                f"Projected:  {self.amount(Decimal(self._detail('projected')))} by "
                f"{self._detail('horizon')} at "
                f"{self.amount(Decimal(self._detail('rate_per_hour')))} per hour "
                f"(spent since {self._detail('since')})"
            )
            runs_out = self.details.get("runs_out_at")
            out.append(f"Runs out:   {runs_out if isinstance(runs_out, str) else 'not in this window'}")
        if self.reason:
            out.append(f"Resolved:   {self.reason}")
        if self.top_consumers:
            out.append("")
            out.append("Top consumers in this window:")
            for c in self.top_consumers:
                label = "model/mode" if c.by == "model" else "scope"
                plural = "" if c.count == 1 else "s"
                out.append(
                    f"  {format_amount(c.amount):>10} {self.unit}  {label} {c.name} "
                    f"({c.count} generation{plural})"
                )
        if self.dashboard_url:
            out.append("")
            out.append(f"Dashboard:  {self.dashboard_url}")
        return out

    def _pack_lines(self) -> list[str]:
        out = [
            f"Pack:       {self._detail('pack_name')} "
            f"({self._detail('pack_type')}, id {self._detail('pack_id')})",
            f"Expires:    {self._detail('expires_at')}",
            f"Remaining:  {self.amount(Decimal(self._detail('remaining')))}",
            f"At risk:    {self.amount(Decimal(self._detail('units_at_risk')))} will not be used "
            "at the current burn rate",
        ]
        usd = self.details.get("usd_at_risk")
        if isinstance(usd, str):
            cents = Decimal(usd).quantize(Decimal("0.01"), context=MONEY)
            out.append(f"Value:      USD {format_amount(cents)}")
        if self.reason:
            out.append(f"Resolved:   {self.reason}")
        if self.dashboard_url:
            out += ["", f"Dashboard:  {self.dashboard_url}"]
        return out

    def body(self) -> str:
        return "\n".join(self.lines()) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: amounts as decimal strings, times in ISO 8601."""
        return {
            "id": self.id,
            "event": self.event,
            "kind": self.kind,
            "scope": self.scope,
            "window": self.window,
            "window_key": self.window_key,
            "window_start": None if self.window_start is None else self.window_start.isoformat(),
            "window_end": None if self.window_end is None else self.window_end.isoformat(),
            "threshold": self.threshold,
            "unit": self.unit,
            "used": str(self.used),
            "reserved": str(self.reserved),
            "level": str(self.level),
            "limit": str(self.limit),
            "remaining": str(self.remaining),
            "percent_used": self.percent_used,
            "title": self.title,
            "text": self.text,
            "reason": self.reason,
            "top_consumers": [c.to_dict() for c in self.top_consumers],
            "dashboard_url": self.dashboard_url,
            "created_at": self.created_at.isoformat(),
            "alert_id": self.alert_id,
        }


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def dashboard_link(template: str | None, **fields: object) -> str | None:
    """The configured dashboard URL, with ``{scope}``, ``{window}``, ``{window_key}`` and
    ``{alert_id}`` filled in (URL-quoted) when it contains them."""
    if not template:
        return None
    values = {k: quote(str(v), safe="") for k, v in fields.items()}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


def resolution_reason(alert: AlertRecord, budget: Budget | None, now: datetime) -> str:
    if alert.kind == KIND_PACK_EXPIRY:
        expires = _time(alert.details.get("expires_at"))
        if expires is not None and expires <= now:
            return "the pack has expired"
        return "its units are no longer at risk"
    if budget is None:
        return "the budget was deleted"
    if budget.window != "lifetime" and window_at(budget.window, budget.tz, now).key != alert.window_key:
        return f"the {alert.window} window {alert.window_key} ended"
    if budget.limit > alert.limit:
        before = format_amount(alert.limit) + ("" if alert.unit == budget.unit else f" {alert.unit}")
        return f"the limit was raised from {before} to {format_quantity(budget.limit, budget.unit)}"
    if alert.kind == KIND_MAX_PER_REQUEST:
        return "the per-request maximum was raised"
    if alert.kind == KIND_FORECAST:
        return "the projection is back within the limit"
    return "the level is back below the threshold"


def build_message(
    alert: AlertRecord,
    event: str,
    *,
    consumers: tuple[Consumer, ...] = (),
    dashboard_url: str | None = None,
    budget: Budget | None = None,
    now: datetime | None = None,
) -> AlertMessage:
    """The message of one outbox row (``event``: ``alert`` or ``resolved``)."""
    moment = now or datetime.now(UTC)
    reason = None
    text = alert.message
    if event == PHASE_RESOLVED:
        reason = resolution_reason(alert, budget, moment)
        if alert.kind == KIND_THRESHOLD:
            what = f"{percent(Decimal(alert.threshold))}% alert"
        else:
            what = {
                KIND_REFUSED: "refusal alert",
                KIND_OVERAGE: "overage alert",
                KIND_FORECAST: "forecast alert",
            }.get(alert.kind, "per-request maximum alert")
        text = (
            f"Resolved: the {what} of the {alert.scope} {alert.window} budget ({alert.window_key}): {reason}"
        )
        if alert.kind == KIND_PACK_EXPIRY:
            text = (
                f"Resolved: the expiry alert of resource pack {alert.details.get('pack_name')} "
                f"({alert.window_key}): {reason}"
            )
    stamp = to_ms(alert.created_at)
    return AlertMessage(
        id=f"msg_{alert.id}_{stamp}_{event}",
        event=event,
        kind=alert.kind,
        scope=alert.scope,
        window=alert.window,
        window_key=alert.window_key,
        threshold=alert.threshold,
        used=alert.used,
        reserved=alert.reserved,
        limit=alert.limit,
        text=text,
        created_at=alert.created_at,
        window_start=_time(alert.details.get("window_start")),
        window_end=_time(alert.details.get("window_end")),
        top_consumers=consumers,
        dashboard_url=dashboard_link(
            dashboard_url,
            scope=alert.scope,
            window=alert.window,
            window_key=alert.window_key,
            alert_id=alert.id,
        ),
        reason=reason,
        alert_id=alert.id,
        details=dict(alert.details),
        unit=alert.unit,
    )


def sample_message(dashboard_url: str | None = None, now: datetime | None = None) -> AlertMessage:
    """A made-up 80 % alert (``kling-cost alerts test``)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    window = window_at("day", "UTC", moment)
    return AlertMessage(
        id=f"msg_test_{to_ms(moment)}",
        event=PHASE_ALERT,
        kind=KIND_THRESHOLD,
        scope="account",
        window="day",
        window_key=window.key,
        threshold="0.8",
        used=Decimal("70.000"),
        reserved=Decimal("10.000"),
        limit=Decimal("100.000"),
        text=(
            f"[test] account day budget ({window.key}) reached 80% of its limit: 80 of 100 units used "
            "or reserved, 20 units remaining"
        ),
        created_at=moment,
        window_start=window.start,
        window_end=window.end,
        top_consumers=(
            Consumer("model", "kling-v2-6/pro", Decimal("50.000"), 10),
            Consumer("scope", "project:film", Decimal("45.000"), 9),
        ),
        dashboard_url=dashboard_link(dashboard_url, scope="account", window="day", window_key=window.key),
        details={"test": True, "unit": "units"},
        unit="units",
    )
