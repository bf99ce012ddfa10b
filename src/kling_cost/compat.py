"""The seed document's API, working as written there, but durable and race-free.

``BudgetGuard``, ``pre_batch_check``, ``CostAwareKlingClient`` and ``UsageTracker`` keep the
seed's names, arguments, return values and messages. The deliberate differences:

- state lives in the ledger (``BudgetGuard(..., ledger=URL)``; the default ledger otherwise),
  so a restart forgets nothing and every process shares the same daily budget;
- ``check`` *reserves* the credits atomically, so two workers can never both pass; ``record``
  commits that reservation (a reservation never recorded is reclaimed when its lease ends);
- estimates come from the ``kling-app-credits`` catalog: unlisted combinations raise
  ``PricingError`` instead of silently falling back to 10 credits;
- errors are ``BudgetExceeded`` (still a ``RuntimeError``, with the seed's message);
- the day is a calendar day in ``tz`` (default UTC), not 24 hours since the first call;
- the day budget counts ``credits`` (the unit of its catalog): a ``CostAwareClient`` pricing
  in Kling's API units on the same scope is refused with ``UnitMismatch``, never added in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from .errors import BudgetExceeded, ValidationError
from .ledger import Ledger, Reservation, open_ledger
from .money import MONEY, exact, parse_amount
from .pricing import Estimate, estimate, load_catalog
from .text import check_storable

__all__ = ["BudgetGuard", "CostAwareKlingClient", "UsageTracker", "pre_batch_check"]


def _plain(value: Decimal) -> int | Decimal:
    """The seed deals in whole credits: give ints back where the value is whole."""
    return int(value) if value == value.to_integral_value(context=MONEY) else value.normalize(MONEY)


def _fraction(value: object) -> Decimal:
    """``alert_threshold`` as a Decimal in (0, 1]; else :class:`ValidationError` (a ``ValueError``)."""
    try:
        fraction = None if isinstance(value, bool) else Decimal(str(value))
    except ArithmeticError:  # "eighty", "0.8.1"
        fraction = None
    if fraction is None or not fraction.is_finite() or not 0 < fraction <= 1:
        raise ValidationError(f"alert_threshold must be a fraction in (0, 1], e.g. 0.8, not {value!r}")
    return fraction


class BudgetGuard:
    """Enforce daily credit budget with alerting (the seed's class, on the durable ledger)."""

    def __init__(
        self,
        daily_limit: int | Decimal | str = 1000,
        alert_threshold: float | Decimal | str = 0.8,
        *,
        ledger: Ledger | str | None = None,
        scope: str = "account",
        tz: str = "UTC",
        ttl: timedelta = timedelta(minutes=30),
        catalog: str = "kling-app-credits",
    ) -> None:
        self.daily_limit = parse_amount(daily_limit, what="daily_limit")
        self.alert_threshold = _fraction(alert_threshold)
        self.ledger = ledger if isinstance(ledger, Ledger) else open_ledger(ledger)
        self.scope = scope
        self.ttl = ttl
        self.catalog = catalog
        self.unit = load_catalog(catalog).unit
        """What the budget, ``check`` and ``record`` count: ``credits`` with the seed's catalog."""
        self.ledger.set_budget(
            scope, self.daily_limit, "day", tz=tz, thresholds=[self.alert_threshold], unit=self.unit
        )
        self._local = threading.local()
        self._pending: list[Reservation] = []
        self._alerted: set[str] = set()
        self._lock = threading.Lock()

    def estimate_credits(
        self, duration: int = 5, mode: str = "standard", audio: bool = False
    ) -> int | Decimal:
        """Credits of one video from the seed's table (``kling-app-credits``)."""
        return _plain(self._estimate(duration, mode, audio).amount)

    def _estimate(self, duration: int, mode: str, audio: bool) -> Estimate:
        return estimate(kind="text2video", duration=duration, mode=mode, audio=audio, catalog=self.catalog)

    @exact
    def check(self, credits_needed: int | Decimal, *, metadata: Mapping[str, Any] | None = None) -> bool:
        """Reserve ``credits_needed`` for today, or raise ``BudgetExceeded`` (a RuntimeError).

        Alerts (``_on_alert``) as the seed does, when today's usage including this request
        reaches ``alert_threshold`` (once per day, across processes). ``metadata`` (model,
        mode, prompt, ...) is recorded on the charge.
        """
        usage = self.ledger.usage(self.scope, "day")
        needed = parse_amount(credits_needed, what="credits_needed")
        spent = usage.used + usage.reserved
        if (spent + needed) / self.daily_limit >= self.alert_threshold:
            self._alert_once(usage.window.key, spent + needed)
        try:
            reservation = self.ledger.reserve(
                needed,
                [self.scope],
                ttl=self.ttl,
                metadata={"source": "BudgetGuard.check", **(metadata or {})},
                unit=self.unit,
                catalog=self.catalog,
            )
        except BudgetExceeded as exc:
            now = self.ledger.usage(self.scope, "day")
            raise BudgetExceeded(
                f"Daily budget exceeded: {_plain(now.used + now.reserved)} + {_plain(needed)} > "
                f"{_plain(self.daily_limit)} {self.unit}",
                scope=exc.scope,
                window=exc.window,
                requested=exc.requested,
                available=exc.available,
                limit=exc.limit,
                reason=exc.reason,
                unit=exc.unit,
            ) from None
        stack: list[Reservation] = getattr(self._local, "pending", [])
        stack.append(reservation)
        self._local.pending = stack
        with self._lock:
            self._pending.append(reservation)
        return True

    def record(self, credits: int | Decimal) -> None:
        """Record credits spent: commits the reservation ``check`` made for it (this thread's
        oldest), or records the charge directly when nothing was checked."""
        stack: list[Reservation] = getattr(self._local, "pending", [])
        reservation = None
        with self._lock:
            while stack and reservation is None:
                candidate = stack.pop(0)
                if candidate in self._pending:  # not recorded by anyone yet
                    self._pending.remove(candidate)
                    reservation = candidate
        if reservation is None:  # this thread checked nothing: record the charge directly
            self.ledger.charge(
                credits,
                [self.scope],
                metadata={"source": "BudgetGuard.record"},
                unit=self.unit,
                catalog=self.catalog,
            )
            return
        self.ledger.commit(reservation, credits, force=True)

    def cancel(self) -> None:
        """Release this thread's oldest unrecorded reservation (the generation did not happen)."""
        stack: list[Reservation] = getattr(self._local, "pending", [])
        if stack:
            reservation = stack.pop(0)
            with self._lock:
                if reservation in self._pending:
                    self._pending.remove(reservation)
            self.ledger.release(reservation)

    @exact
    def _alert_once(self, day: str, total: Decimal) -> None:
        with self._lock:
            claimed = day not in self._alerted
            self._alerted.add(day)
        if claimed:
            pct = total / self.daily_limit
            self._on_alert(f"Budget at {pct:.0%} ({_plain(total)}/{_plain(self.daily_limit)})")

    def _on_alert(self, message: str) -> None:
        """Override for custom alerting (Slack, email, PagerDuty)."""
        print(f"ALERT: {message}")

    @property
    def remaining(self) -> int | Decimal:
        return _plain(self.ledger.usage(self.scope, "day").remaining)

    @property
    @exact
    def usage_report(self) -> dict[str, Any]:
        usage = self.ledger.usage(self.scope, "day")
        return {
            "used": _plain(usage.used),
            "limit": _plain(self.daily_limit),
            "remaining": _plain(usage.remaining),
            "usage_pct": f"{usage.used * 100 / self.daily_limit:.1f}%",
        }


@exact
def pre_batch_check(
    prompts: Sequence[str], budget: BudgetGuard, duration: int = 5, mode: str = "standard"
) -> int | Decimal:
    """Estimate and validate batch cost before submission (the seed's function)."""
    per_video = budget.estimate_credits(duration, mode)
    total = len(prompts) * per_video
    print(f"Batch estimate: {len(prompts)} videos x {per_video} credits = {total} credits")
    print(f"Budget remaining: {budget.remaining}")
    remaining = budget.remaining
    if total > remaining:
        raise BudgetExceeded(
            f"Batch needs {total} credits but only {remaining} remaining. "
            f"Reduce to {remaining // per_video} videos or lower mode.",
            scope=budget.scope,
            window="day",
            requested=Decimal(total),
            available=Decimal(remaining),
        )
    return total


class CostAwareKlingClient:
    """Kling client that enforces budget on every request (the seed's wrapper)."""

    def __init__(self, base_client: Any, budget: BudgetGuard) -> None:
        self.client = base_client
        self.budget = budget

    def text_to_video(self, prompt: str, **kwargs: Any) -> Any:
        check_storable({"prompt": prompt, **kwargs})  # refused before anything is held
        est = self.budget._estimate(
            kwargs.get("duration", 5),
            kwargs.get("mode", "standard"),
            kwargs.get("audio", False),
        )
        fields = est.charge_fields()  # as priced: default model, normalised mode and duration
        model = kwargs.get("model_name") or kwargs.get("model")
        if isinstance(model, str) and model:
            fields["model"] = model
        credits = _plain(est.amount)
        self.budget.check(credits, metadata={"kind": "text2video", "prompt": prompt, **fields})
        try:
            result = self.client.text_to_video(prompt, **kwargs)
        except BaseException:
            self.budget.cancel()  # nothing was generated: free the credits at once
            raise
        self.budget.record(credits)
        return result


class UsageTracker:
    """Log every generation for cost analysis (the seed's JSONL format)."""

    def __init__(self, log_file: str = "kling_usage.jsonl") -> None:
        self.log_file = log_file

    def log(self, task_id: str, credits: int, model: str, duration: int, mode: str, prompt: str) -> None:
        entry = {
            "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
            "task_id": task_id,
            "credits": credits,
            "model": model,
            "duration": duration,
            "mode": mode,
            "prompt_preview": prompt[:100],
        }
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=str) + "\n")
