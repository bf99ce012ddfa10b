"""Relaying Kling's callbacks to the clients' own URLs: signed, retried, durable.

The proxy takes over every create's ``callback_url`` and remembers the client's; when Kling
calls back (or the proxy learns a task's end another way), it queues the body in the ledger
(``ledger.relays.enqueue``: one relay per task and status, so Kling's duplicate callbacks go
out once). A :class:`Relayer` sends what is due:

* the body as it came, ``POST``, ``content-type: application/json``, signed Standard-Webhooks
  style with the **key's own** webhook secret (:meth:`MasterKey.webhook_secret`, read at
  delivery time, so a rotated key's relays are signed with its new secret): ``webhook-id``
  (``relay_<id>``, the same on every attempt, so a receiver can drop duplicates),
  ``webhook-timestamp`` (this machine's Unix seconds: the receiver compares it with its own
  clock) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``, :func:`~kling_cost.signing.sign_webhook`);
* any ``2xx`` is delivered; anything else (a ``3xx`` included: redirects are never followed),
  a transport error or a timeout is a failed attempt, retried after the next step of the
  schedule (5 s, 30 s, 2 min, 10 min, 1 h, 2 h, 4 h, 8 h, 8 h, ...) until ``max_attempts``
  attempts or ``max_age`` (24 h) after the callback came; then it is given up (``failed``);
* a URL that no longer passes the SSRF check of :mod:`.callback_url` (its host now resolves
  to a private address) is given up at once; a host that does not resolve is retried (DNS
  fails for a while). Every connection is checked again when it is made (DNS rebinding);
  a refusal there is a failed attempt, and the next attempt's check decides.

Decisions: a **revoked** (or expired) key's relays are still delivered: they report the key's
own tasks, started while it was valid, and its client is waiting for them. A key that no
longer exists cannot sign: its relays are given up. Delivery is at least once: a relayer that
dies mid-send leaves its relay to another once its claim's lease ends.

All state is in the ledger (claims, attempts, next attempt times), so a restarted proxy, or
another proxy process on another machine sharing the PostgreSQL ledger, carries on; two
relayers never send the same relay at the same time (see :mod:`kling_cost.ledger.relay_store`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from types import TracebackType

import anyio
import anyio.to_thread
import httpx

from ..alerts.redact import transport_reason
from ..errors import ConfigurationError, InvalidRequest
from ..ledger import Ledger
from ..ledger.relay_store import Relay, RelayStore
from ..signing import sign_webhook
from .callback_url import (
    Resolver,
    check_addresses,
    guarded_client,
    host_allowed,
    parse_callback_url,
    resolve_host,
    system_resolver,
)
from .keys import MasterKey

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_ATTEMPTS", "DEFAULT_SCHEDULE", "Relayer"]

log = logging.getLogger("kling_cost.proxy.relay")

DEFAULT_SCHEDULE: tuple[timedelta, ...] = tuple(
    timedelta(seconds=s) for s in (5, 30, 120, 600, 3600, 7200, 14400, 28800)
)
"""Delay after the 1st, 2nd, ... failed attempt; the last one repeats."""
DEFAULT_MAX_ATTEMPTS = 10
"""Attempts before a relay is given up (the 10th comes about 23 h after the callback)."""
DEFAULT_MAX_AGE = timedelta(hours=24)
"""No attempt is planned later than this after the callback came."""
USER_AGENT = "kling-cost-proxy"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= 86_400):
        raise ConfigurationError(f"{what} must be positive and at most a day, not {value!r}")
    return seconds


async def _set_then_cancel(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class Relayer:
    """Delivers a ledger's due relays (:meth:`deliver_due`, or :meth:`run` until stopped).

    ``allowed_hosts``: callback hosts allowed although they resolve to private addresses (the
    proxy's ``--allow-callback-host``), on top of each key's own ``callback_hosts``.
    ``timeout``: seconds for one attempt, connect to answer. ``schedule``: delays after each
    failed attempt (the last repeats); ``max_attempts`` and ``max_age`` end the retries.
    ``lease``: how long a claimed relay is kept from other relayers (at least twice the
    timeout). ``batch_size``: relays claimed, and sent concurrently, at a time.
    ``client``: an ``httpx.AsyncClient`` to send with (the caller's, not closed here; the URL
    is still checked before each attempt, but only the default client re-checks at connect
    time); by default one :func:`~.callback_url.guarded_client` per set of allowed hosts.
    ``resolver``: host lookups (tests inject one). ``clock``: the ledger's by default.
    """

    def __init__(
        self,
        ledger: Ledger,
        master: MasterKey,
        *,
        allowed_hosts: Collection[str] = (),
        timeout: float = 10.0,
        schedule: Sequence[timedelta] = DEFAULT_SCHEDULE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_age: timedelta = DEFAULT_MAX_AGE,
        lease: timedelta = timedelta(minutes=2),
        batch_size: int = 16,
        client: httpx.AsyncClient | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.timeout = _seconds(timeout, "timeout")
        steps = tuple(schedule)
        if not steps or any(not isinstance(s, timedelta) or s < timedelta(0) for s in steps):
            raise ConfigurationError("schedule must be a non-empty list of delays of at least 0 s")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError(
                f"max_attempts must be a whole number of at least 1, not {max_attempts!r}"
            )
        if not isinstance(max_age, timedelta) or max_age <= timedelta(0):
            raise ConfigurationError("max_age must be a positive timedelta")
        if not isinstance(lease, timedelta) or lease.total_seconds() < 2 * self.timeout:
            raise ConfigurationError(
                f"lease must be at least twice the timeout ({2 * self.timeout:g} s), so a relay "
                "being sent is never claimed by another relayer"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1000:
            raise ConfigurationError(f"batch_size must be a whole number from 1 to 1000, not {batch_size!r}")
        self.ledger = ledger
        self.master = master
        self.store: RelayStore = ledger.relays
        self.allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        self.schedule = steps
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.lease = lease
        self.batch_size = batch_size
        self.resolver = resolver
        self.clock = clock or ledger.clock
        self.wall = wall
        self._client = client
        self._clients: dict[frozenset[str], httpx.AsyncClient] = {}
        self._wake: anyio.Event | None = None

    # -- one pass ------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Send every relay due now, ``batch_size`` at a time, concurrently; returns how many
        were delivered. Failures are recorded in the ledger, never raised (a ledger that
        cannot be reached raises :class:`~kling_cost.errors.StorageError`)."""
        delivered = 0
        for _ in range(100):  # bounded: relays retried at once (a 0 s delay) wait for the next pass
            relays = await anyio.to_thread.run_sync(self.store.claim_due, self.batch_size, self.lease)
            if not relays:
                break
            outcomes: list[bool] = []
            async with anyio.create_task_group() as group:
                for relay in relays:
                    group.start_soon(self._deliver_one, relay, outcomes)
            delivered += sum(outcomes)
            if len(relays) < self.batch_size:
                break
        return delivered

    def next_attempt(self, relay: Relay, now: datetime) -> datetime | None:
        """When ``relay`` (whose ``attempts`` include the one that just failed) is tried again,
        or None to give up."""
        if relay.attempts >= self.max_attempts:
            return None
        step = self.schedule[min(max(relay.attempts, 1), len(self.schedule)) - 1]
        at = now + step
        return None if at > relay.created_at + self.max_age else at

    async def _deliver_one(self, relay: Relay, outcomes: list[bool]) -> None:
        try:
            ok = await self._attempt(relay)
        except Exception as exc:  # a bug or the ledger failing: the claim lapses, the relay is retried
            log.exception("relay %s: delivery failed unexpectedly", relay.id)
            ok = False
            try:
                await self._retry(relay, f"unexpected error: {type(exc).__name__}")
            except Exception:
                log.exception("relay %s: its failure could not be recorded", relay.id)
        outcomes.append(ok)

    async def _attempt(self, relay: Relay) -> bool:
        key = await anyio.to_thread.run_sync(self.ledger.proxy.key_by_id, relay.key_id)
        if key is None:
            await self._finish(relay, "the key of this relay no longer exists", None)
            return False
        allowed = self.allowed_hosts | frozenset(h.lower() for h in key.callback_hosts)
        try:
            target = parse_callback_url(relay.url)
        except InvalidRequest as exc:
            await self._finish(relay, str(exc), None)
            return False
        if not host_allowed(target.host, target.port, allowed):
            try:
                addresses = await anyio.to_thread.run_sync(
                    resolve_host, target.host, target.port, self.resolver
                )
            except InvalidRequest as exc:  # DNS may answer again later
                await self._retry(relay, str(exc))
                return False
            try:
                check_addresses(target.host, addresses)
            except InvalidRequest as exc:  # the host now points inside: never sent there
                await self._finish(relay, str(exc), None)
                return False
        body = relay.body.encode("utf-8")
        stamp = int(self.wall())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": relay.webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_webhook(self.master.webhook_secret(key), relay.webhook_id, stamp, body),
        }
        error = await self._post(self._client_for(allowed), relay.url, body, headers)
        if error is None:
            await anyio.to_thread.run_sync(self.store.delivered, relay)
            return True
        await self._retry(relay, error)
        return False

    async def _post(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> str | None:
        """None when the receiver answered 2xx, else a few words on why not (no receiver text,
        no URL path: both may hold secrets)."""
        try:
            with anyio.fail_after(self.timeout):
                async with client.stream(
                    "POST", url, content=body, headers=headers, follow_redirects=False
                ) as response:
                    status = response.status_code  # the answer's body is never read
        except InvalidRequest as exc:  # refused at connect time (the name now resolves inside)
            return str(exc)
        except TimeoutError:
            return "timed out"
        except httpx.HTTPError as exc:
            return transport_reason(exc)
        if 200 <= status < 300:
            return None
        phrase = httpx.codes.get_reason_phrase(status)
        note = " (redirects are not followed)" if 300 <= status < 400 else ""
        return f"HTTP {status} {phrase}".strip() + note

    async def _retry(self, relay: Relay, error: str) -> None:
        await self._finish(relay, error, self.next_attempt(relay, self.clock()))

    async def _finish(self, relay: Relay, error: str, next_at: datetime | None) -> None:
        if next_at is None:
            log.warning("relay %s (task %s) given up: %s", relay.id, relay.task_id, error)
        kept = await anyio.to_thread.run_sync(self.store.failed, relay, error, next_at)
        if not kept:
            log.info("relay %s was taken by another relayer meanwhile", relay.id)

    def _client_for(self, allowed: frozenset[str]) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        client = self._clients.get(allowed)
        if client is None:
            client = guarded_client(allowed_hosts=allowed, resolver=self.resolver, timeout=self.timeout)
            self._clients[allowed] = client
        return client

    # -- a loop --------------------------------------------------------------------------------

    async def run(self, stop: anyio.Event, interval: float = 1.0) -> None:
        """Deliver every ``interval`` seconds (and at once after :meth:`wake`) until ``stop``
        is set. A pass that fails (the ledger unreachable) is logged and tried again."""
        interval = _seconds(interval, "interval")
        while not stop.is_set():
            self._wake = anyio.Event()
            try:
                await self.deliver_due()
            except Exception:
                log.exception("relay pass failed; trying again in %g s", interval)
            if stop.is_set():
                break
            with anyio.move_on_after(interval):
                async with anyio.create_task_group() as group:
                    for event in (stop, self._wake):
                        group.start_soon(_set_then_cancel, event, group.cancel_scope)
        self._wake = None

    def wake(self) -> None:
        """Start the next pass of :meth:`run` now (call it from the event loop's thread, e.g.
        right after queueing a relay)."""
        if self._wake is not None:
            self._wake.set()

    async def aclose(self) -> None:
        """Close the clients this relayer made (not one it was given, nor the ledger)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> Relayer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
