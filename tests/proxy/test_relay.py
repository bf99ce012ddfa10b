"""The callback relay: signed with the key's secret, retried with backoff from the ledger,
durable across restarts, once per task status, exactly one sender at a time; on both ledger
backends, to real webhook receivers over loopback HTTP. Time moves by the FakeClock only."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kling_cost.errors import AuthError, ConfigurationError, ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.proxy.keys import IssuedKey, Keys, MasterKey
from kling_cost.proxy.relay import Relayer
from kling_cost.signing import verify_webhook
from tests.helpers import FakeClock
from tests.ledger.conftest import clock, ledger, ledger_url  # noqa: F401 - the backend matrix
from tests.servers import Receiver, TcpRelay, serve

MASTER = MasterKey(b"relay-tests-master-key-0123456789abcdef", "tests")
LOOPBACK = {"127.0.0.1"}
BODY = json.dumps({"task_id": "t-1", "task_status": "succeed", "final_unit_deduction": "2"}).encode()


@dataclass
class Scripted:
    """A webhook receiver answering the statuses it is given, in turn (200 once they run out)."""

    statuses: list[int] = field(default_factory=list)
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.calls.append((dict(request.headers), body))
                status = self.statuses.pop(0) if self.statuses else 200
            return Response("receiver text that must not be kept", status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def issued(ledger: Ledger) -> IssuedKey:  # noqa: F811
    return Keys(ledger, MASTER).create("alice", scopes=["project:film"])


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve(hooks.app()) as base:
        yield hooks, f"{base}/hook"


def relayer(ledger: Ledger, **options: Any) -> Relayer:  # noqa: F811
    options.setdefault("allowed_hosts", LOOPBACK)
    options.setdefault("timeout", 5)
    return Relayer(ledger, MASTER, **options)


def deliver(relay: Relayer) -> int:
    async def main() -> int:
        async with relay:
            return await relay.deliver_due()

    return anyio.run(main)


def test_a_relay_reaches_the_client_signed_with_the_keys_own_secret(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    assert ledger.relays.enqueue(issued.record.id, "t-1", "succeed", url, BODY) is True
    assert deliver(relayer(ledger)) == 1
    [(headers, body)] = hooks.calls
    assert body == BODY  # relayed as it came
    assert headers["content-type"] == "application/json"
    [row] = ledger.relays.relays()
    assert headers["webhook-id"] == f"relay_{row.id}" == row.webhook_id
    verify_webhook(issued.webhook_secret, headers, body)  # the key's own whsec_ secret
    other = Keys(ledger, MASTER).create("bob")
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(other.webhook_secret, headers, body)
    assert (row.state, row.attempts, row.delivered_at, row.claim, row.last_error) == (
        "delivered",
        1,
        clock(),
        None,
        None,
    )
    assert deliver(relayer(ledger)) == 0  # nothing left to send
    assert len(hooks.calls) == 1


def test_a_failed_attempt_is_retried_after_the_backoff_and_counted(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
) -> None:
    hooks = Scripted(statuses=[500, 503])
    with serve(hooks.app()) as base:
        ledger.relays.enqueue(issued.record.id, "t-1", "succeed", f"{base}/hook", BODY)
        start = clock()
        assert deliver(relayer(ledger)) == 0
        [row] = ledger.relays.relays()
        assert (row.state, row.attempts) == ("pending", 1)
        assert row.last_error == "HTTP 500 Internal Server Error"  # never the receiver's text
        assert row.next_at == start + timedelta(seconds=5)
        clock.advance(seconds=4)
        assert deliver(relayer(ledger)) == 0  # not due yet: nothing sent
        assert len(hooks.calls) == 1
        clock.advance(seconds=1)
        assert deliver(relayer(ledger)) == 0
        [row] = ledger.relays.relays()
        assert (row.attempts, row.last_error) == (2, "HTTP 503 Service Unavailable")
        assert row.next_at == clock() + timedelta(seconds=30)
        clock.advance(seconds=30)
        assert deliver(relayer(ledger)) == 1
    [row] = ledger.relays.relays()
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
    assert [h["webhook-id"] for h, _ in hooks.calls] == [row.webhook_id] * 3  # stable across retries
    for headers, body in hooks.calls:
        verify_webhook(issued.webhook_secret, headers, body)


def test_a_receiver_that_is_down_is_retried_by_a_restarted_relayer(
    ledger_url: str,  # noqa: F811
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    port = int(url.split(":")[2].split("/")[0])
    with TcpRelay(("127.0.0.1", port)) as front:
        front.stop()  # the client's server is down
        ledger.relays.enqueue(issued.record.id, "t-9", "succeed", f"http://127.0.0.1:{front.port}/hook", BODY)
        assert deliver(relayer(ledger)) == 0
        [row] = ledger.relays.relays()
        assert (row.state, row.attempts, row.last_error) == ("pending", 1, "connection refused")
        ledger.close()  # the proxy stops; everything it knew is in the ledger

        with open_ledger(ledger_url, clock=clock) as restarted:
            front.start()  # the client's server is back
            assert deliver(relayer(restarted)) == 0  # its next attempt is not due yet
            clock.advance(seconds=5)
            assert deliver(relayer(restarted)) == 1
            [row] = restarted.relays.relays()
    assert (row.state, row.attempts) == ("delivered", 2)
    [(headers, body)] = hooks.calls
    verify_webhook(issued.webhook_secret, headers, body)


def test_a_duplicate_callback_of_one_task_status_is_relayed_once(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    key = issued.record.id
    assert ledger.relays.enqueue(key, "t-1", "processing", url, b'{"task_status":"processing"}') is True
    assert ledger.relays.enqueue(key, "t-1", "succeed", url, BODY) is True
    assert ledger.relays.enqueue(key, "t-1", "succeed", url, BODY) is False  # Kling called back twice
    assert ledger.relays.enqueue(key, "t-1", "succeed", url, "another body") is False
    assert deliver(relayer(ledger)) == 2
    assert deliver(relayer(ledger)) == 0
    assert sorted(body for _, body in hooks.calls) == sorted([b'{"task_status":"processing"}', BODY])
    assert ledger.relays.enqueue(key, "t-1", "succeed", url, BODY) is False  # even once delivered
    assert deliver(relayer(ledger)) == 0 and len(hooks.calls) == 2


def test_two_relayers_on_one_ledger_deliver_each_relay_exactly_once(
    ledger_url: str,  # noqa: F811
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    count = 40
    for n in range(count):
        ledger.relays.enqueue(issued.record.id, f"t-{n}", "succeed", url, json.dumps({"n": n}))
    with open_ledger(ledger_url, clock=clock) as first, open_ledger(ledger_url, clock=clock) as second:

        async def main() -> list[int]:
            done: list[int] = []
            async with relayer(first, batch_size=3) as one, relayer(second, batch_size=3) as two:

                async def run(relay: Relayer) -> None:
                    done.append(await relay.deliver_due())

                async with anyio.create_task_group() as group:
                    group.start_soon(run, one)
                    group.start_soon(run, two)
            return done

        done = anyio.run(main)
    assert sum(done) == count
    ids = [headers["webhook-id"] for headers, _ in hooks.calls]
    assert len(ids) == count and len(set(ids)) == count  # each sent once, none twice
    assert sorted(json.loads(body)["n"] for _, body in hooks.calls) == list(range(count))
    rows = ledger.relays.relays(limit=1000)
    assert {(r.state, r.attempts) for r in rows} == {("delivered", 1)}


def test_a_claim_keeps_other_relayers_away_until_its_lease_lapses(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
) -> None:
    store = ledger.relays
    store.enqueue(issued.record.id, "t-1", "succeed", "https://93.184.216.34/hook", BODY)
    [mine] = store.claim_due(10, timedelta(minutes=2))
    assert mine.claim is not None and mine.attempts == 1
    assert store.claim_due(10, timedelta(minutes=2)) == []  # another relayer finds nothing
    clock.advance(minutes=2)  # the first relayer died mid-send: its claim lapsed
    [theirs] = store.claim_due(10, timedelta(minutes=2))
    assert theirs.id == mine.id and theirs.claim != mine.claim and theirs.attempts == 2
    assert store.failed(mine, "timed out", clock() + timedelta(seconds=5)) is False  # claim lost
    assert store.delivered(mine) is True  # a success is a fact, whoever holds the claim
    assert store.failed(theirs, "HTTP 500", clock()) is False  # already delivered: no change
    [row] = store.relays()
    assert (row.state, row.attempts, row.claim) == ("delivered", 2, None)
    assert store.relay(row.id) == row and store.relay(row.id + 1000) is None


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    elsewhere, target = receiver
    app = Starlette(routes=[Route("/hook", lambda r: RedirectResponse(target, 302), methods=["POST"])])
    with serve(app) as base:
        ledger.relays.enqueue(issued.record.id, "t-1", "succeed", f"{base}/hook", BODY)
        assert deliver(relayer(ledger)) == 0
    [row] = ledger.relays.relays()
    assert row.state == "pending"
    assert row.last_error == "HTTP 302 Found (redirects are not followed)"
    assert elsewhere.calls == []


def test_a_relay_is_given_up_after_its_last_attempt(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
) -> None:
    hooks = Scripted(statuses=[500] * 10)
    with serve(hooks.app()) as base:
        ledger.relays.enqueue(issued.record.id, "t-1", "failed", f"{base}/hook", BODY)
        relay_options = {"schedule": [timedelta(seconds=5), timedelta(seconds=60)], "max_attempts": 3}
        for step in (5, 60):
            assert deliver(relayer(ledger, **relay_options)) == 0
            assert ledger.relays.relays(state="pending")
            clock.advance(seconds=step)
        assert deliver(relayer(ledger, **relay_options)) == 0
        [row] = ledger.relays.relays()
        assert (row.state, row.attempts, row.last_error) == ("failed", 3, "HTTP 500 Internal Server Error")
        assert ledger.relays.relays(state="failed") == [row] and ledger.relays.relays(state="pending") == []
        clock.advance(days=1)
        assert deliver(relayer(ledger, **relay_options)) == 0
    assert len(hooks.calls) == 3  # nothing after giving up


def test_the_default_schedule_backs_off_and_gives_up_within_a_day(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
) -> None:
    relay = relayer(ledger)
    ledger.relays.enqueue(issued.record.id, "t-1", "succeed", "https://93.184.216.34/hook", BODY)
    [row] = ledger.relays.relays()
    now = row.created_at
    delays = []
    for attempts in range(1, 12):
        at = relay.next_attempt(replace(row, attempts=attempts), now)
        if at is None:
            break
        delays.append(int((at - now).total_seconds()))
        now = at
    assert delays == [5, 30, 120, 600, 3600, 7200, 14400, 28800, 28800]  # then the 10th attempt fails
    assert now - row.created_at < timedelta(hours=24)
    short = relayer(ledger, max_age=timedelta(minutes=1))
    assert short.next_attempt(replace(row, attempts=3), row.created_at) is None


def test_a_revoked_keys_relays_are_still_delivered(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    ledger.relays.enqueue(issued.record.id, "t-1", "succeed", url, BODY)
    Keys(ledger, MASTER).revoke("alice")
    assert deliver(relayer(ledger)) == 1
    verify_webhook(issued.webhook_secret, *hooks.calls[0])


def test_a_rotated_key_signs_its_relays_with_its_new_secret(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    ledger.relays.enqueue(issued.record.id, "t-1", "succeed", url, BODY)
    rotated = Keys(ledger, MASTER).rotate("alice")
    assert deliver(relayer(ledger)) == 1
    verify_webhook(rotated.webhook_secret, *hooks.calls[0])


def test_a_private_callback_url_is_refused_unless_allowed(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    ledger.relays.enqueue(issued.record.id, "t-1", "succeed", url, BODY)
    assert deliver(relayer(ledger, allowed_hosts=())) == 0  # the proxy does not allow loopback
    [row] = ledger.relays.relays()
    assert row.state == "failed"  # given up at once: it points inside the network
    assert "loopback" in (row.last_error or "") and hooks.calls == []
    # a key whose own callback hosts allow loopback gets its relays delivered
    allowed = Keys(ledger, MASTER).create("carol", callback_hosts=["127.0.0.1"])
    ledger.relays.enqueue(allowed.record.id, "t-2", "succeed", url, BODY)
    assert deliver(relayer(ledger, allowed_hosts=())) == 1
    verify_webhook(allowed.webhook_secret, *hooks.calls[0])


def test_a_host_that_turns_into_loopback_after_the_check_is_refused_when_connecting(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    port = int(url.split(":")[2].split("/")[0])
    answers = [["93.184.216.34"]]  # public when checked, loopback when connecting (DNS rebinding)

    def dns(host: str, port: int) -> list[str]:
        assert host == "rebind.example"
        return answers.pop(0) if answers else ["127.0.0.1"]

    ledger.relays.enqueue(issued.record.id, "t-1", "succeed", f"http://rebind.example:{port}/hook", BODY)
    assert deliver(relayer(ledger, allowed_hosts=(), resolver=dns)) == 0
    [row] = ledger.relays.relays()
    assert row.state == "pending" and "resolves to 127.0.0.1" in (row.last_error or "")
    assert hooks.calls == []
    clock.advance(seconds=5)
    assert deliver(relayer(ledger, allowed_hosts=(), resolver=dns)) == 0  # now refused when checked
    [row] = ledger.relays.relays()
    assert row.state == "failed" and hooks.calls == []


def test_a_host_that_does_not_resolve_is_retried(
    ledger: Ledger,  # noqa: F811
    clock: FakeClock,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    port = int(url.split(":")[2].split("/")[0])
    answers: list[list[str]] = []

    def dns(host: str, port: int) -> list[str]:
        if not answers:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return answers[0]

    ledger.relays.enqueue(issued.record.id, "t-1", "succeed", f"http://hooks.internal:{port}/hook", BODY)
    assert deliver(relayer(ledger, allowed_hosts=(), resolver=dns)) == 0
    [row] = ledger.relays.relays()
    assert row.state == "pending" and "does not resolve" in (row.last_error or "")
    answers.append(["127.0.0.1"])  # DNS answers again; the operator allows this internal host
    clock.advance(seconds=5)
    assert deliver(relayer(ledger, allowed_hosts={"hooks.internal"}, resolver=dns)) == 1
    assert hooks.calls[0][0]["host"] == f"hooks.internal:{port}"


def test_relays_are_listed_by_state_and_key(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
) -> None:
    other = Keys(ledger, MASTER).create("bob")
    store = ledger.relays
    store.enqueue(issued.record.id, "t-1", "succeed", "https://93.184.216.34/a", BODY)
    store.enqueue(other.record.id, "t-2", "succeed", "https://93.184.216.34/b", BODY)
    assert [r.task_id for r in store.relays()] == ["t-2", "t-1"]  # newest first
    assert [r.task_id for r in store.relays(key_id=other.record.id)] == ["t-2"]
    assert [r.task_id for r in store.relays(state="pending", limit=1)] == ["t-2"]
    assert store.relays(state="delivered") == []
    with pytest.raises(ValidationError, match="unknown"):
        store.relays(state="sent")
    with pytest.raises(ValidationError, match="limit"):
        store.relays(limit=0)
    with pytest.raises(ValidationError, match="UTF-8"):
        store.enqueue(issued.record.id, "t-3", "succeed", "https://93.184.216.34/a", b"\xff\xfe")
    with pytest.raises(ValidationError, match="NUL"):
        store.enqueue(issued.record.id, "t-3", "succeed", "https://93.184.216.34/a", "{\x00}")
    with pytest.raises(ValidationError, match="task_id"):
        store.enqueue(issued.record.id, "", "succeed", "https://93.184.216.34/a", BODY)
    with pytest.raises(ValidationError, match="bytes or str"):
        store.enqueue(issued.record.id, "t-3", "succeed", "https://93.184.216.34/a", {"a": 1})  # type: ignore[arg-type]


def test_the_run_loop_delivers_until_stopped_and_wakes_on_demand(
    ledger: Ledger,  # noqa: F811
    issued: IssuedKey,
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver

    async def main() -> None:
        stop = anyio.Event()
        async with relayer(ledger) as relay, anyio.create_task_group() as group:
            group.start_soon(relay.run, stop, 3600.0)  # a long interval: only wake() starts a pass
            await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(
                ledger.relays.enqueue, issued.record.id, "t-1", "succeed", url, BODY
            )
            relay.wake()
            with anyio.fail_after(10):
                while not await anyio.to_thread.run_sync(lambda: ledger.relays.relays(state="delivered")):
                    await anyio.sleep(0.01)
            stop.set()  # the loop ends at once, whatever its interval

    anyio.run(main)
    assert len(hooks.calls) == 1


def test_bad_settings_are_configuration_errors(ledger: Ledger) -> None:  # noqa: F811
    for options in (
        {"timeout": 0},
        {"timeout": float("nan")},
        {"schedule": []},
        {"schedule": [timedelta(seconds=-1)]},
        {"max_attempts": 0},
        {"max_age": timedelta(0)},
        {"timeout": 120, "lease": timedelta(minutes=2)},
        {"batch_size": 0},
    ):
        with pytest.raises(ConfigurationError):
            relayer(ledger, **options)
