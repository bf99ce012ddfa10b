"""``kling-cost proxy`` as real processes (the CLI) over one ledger, the simulator as Kling.

What the issue asks of several proxies: a budget that fits ten tasks lets at most ten through
fifty concurrent clients, on one process or two sharing a PostgreSQL ledger; a proxy killed
between Kling's accept and its attach leaves a task that a restarted proxy finds by the
external id it injected and charges once; a revoked key is refused on the next request by
every process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kling_cost.errors import KlingAPIError
from kling_cost.kling.client import KlingClient
from kling_cost.kling.retry import RetryPolicy
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.proxy.keys import IssuedKey, Keys, MasterKey
from kling_cost.simulator import ManualClock, create_app
from tests.helpers import fresh_postgres_url, need_postgres
from tests.servers import AK, API_KEY, SK, serve

pytestmark = pytest.mark.slow

MASTER = "proxy-processes-master-key-0123456789abcdef"
CREATE_PATH = "/v1/videos/text2video"
CLIP = {"model_name": "kling-v2-6", "mode": "std", "duration": "5"}
"""1.5 units at Kling's list price: a budget of 15 fits ten."""
CLIP_UNITS = Decimal("1.5")


# -- the processes -------------------------------------------------------------------------------


@dataclass
class Proxy:
    """One ``kling-cost proxy`` process and where it listens."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _started(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The proxy's URL once it answers /healthz (it prints its port: it was given port 0)."""
    deadline = time.monotonic() + 30
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the proxy exited ({proc.returncode}):\n{log.read_text(errors='replace')}")
        if url is None:
            found = re.search(r"proxy on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"the proxy did not start:\n{log.read_text(errors='replace')}")


class Processes:
    """Proxy processes started by one test: stopped (never orphaned) when it ends, their output
    printed when it fails."""

    def __init__(self, tmp_path: Path, upstream: str, ledger_url: str) -> None:
        self.tmp_path = tmp_path
        self.upstream = upstream
        self.ledger_url = ledger_url
        self.started: list[Proxy] = []

    def start(self, count: int = 1, *, settle_interval: float = 0.2) -> list[Proxy]:
        """``count`` proxy processes, started together; returned once each answers."""
        env = {
            **os.environ,
            "KLING_ACCESS_KEY": AK,
            "KLING_SECRET_KEY": SK,
            "KLING_API_KEY": API_KEY,
            "KLING_COST_MASTER_KEY": MASTER,
            "COLUMNS": "240",
        }
        args = [
            *(sys.executable, "-m", "kling_cost", "proxy"),
            *("--upstream", self.upstream, "--ledger", self.ledger_url, "--port", "0"),
            *("--settle-interval", str(settle_interval), "--upstream-timeout", "10"),
        ]
        new = []
        for _ in range(count):
            log = self.tmp_path / f"proxy-{len(self.started)}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
            self.started.append(Proxy(proc, "", log))
            new.append(self.started[-1])
        for proxy in new:
            proxy.url = _started(proxy.log, proxy.proc)
        return new

    def stop_all(self) -> None:
        for proxy in self.started:
            if proxy.proc.poll() is None:
                proxy.proc.send_signal(signal.SIGTERM)
        for proxy in self.started:
            try:
                proxy.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.proc.kill()
                proxy.proc.wait(timeout=10)

    def report(self) -> str:
        return "\n".join(f"--- proxy {p.pid} ({p.url}):\n{p.output()}" for p in self.started)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[str, str], Processes]]:
    made: list[Processes] = []

    def make(upstream: str, ledger_url: str) -> Processes:
        made.append(Processes(tmp_path, upstream, ledger_url))
        return made[-1]

    try:
        yield make
    finally:
        for group in made:
            group.stop_all()
            print(group.report(), file=sys.stderr)  # pytest shows it when the test failed


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards."""
    need_postgres()
    url = fresh_postgres_url()
    yield url
    with open_ledger(url) as ledger:
        ledger.backend.drop_schema()  # type: ignore[attr-defined]


@contextmanager
def kling(**settings: Any) -> Iterator[tuple[str, Any]]:
    """The simulator on loopback (concurrency high: only the budget limits these tests)."""
    app = create_app(AK, SK, api_key=API_KEY, concurrency=200, video_units=10_000, **settings)
    with serve(app) as url:
        yield url, app.state.simulator


def new_key(ledger: Ledger, name: str, budget: Decimal | None = None) -> IssuedKey:
    issued = Keys(ledger, MasterKey(MASTER.encode(), "test")).create(name)
    if budget is not None:
        ledger.set_budget(f"key:{name}", budget, "day")
    return issued


def jwt_client(key: IssuedKey, url: str) -> KlingClient:
    """The project's own client, signing with the virtual secret key, never retrying."""
    return KlingClient(key.access_key, key.secret_key, base_url=url, retry=RetryPolicy.off(), timeout=20)


# -- 1. fifty clients, ten tasks' worth of budget -----------------------------------------------


def burst(ledger_url: str, proxies: list[Proxy], sim: Any, clock: ManualClock, tmp_name: str) -> None:
    """Fifty clients create at once on one key whose budget fits ten: ten reach Kling, forty
    are answered 429/1102, and the budget never holds more than its limit. Then the ten end at
    Kling and every process's settler polls them: each is charged once, at Kling's figure."""
    with open_ledger(ledger_url) as ledger:
        key = new_key(ledger, tmp_name, Decimal(15))
        scope = f"key:{tmp_name}"
        peaks: list[Decimal] = []
        stop = threading.Event()

        def sample() -> None:  # the ledger, read while the burst runs
            while not stop.is_set():
                u = ledger.usage(scope)
                peaks.append(u.used + u.reserved)
                time.sleep(0.005)

        answers: list[tuple[int, int | None, str]] = []
        lock = threading.Lock()
        gate = threading.Barrier(50)

        def client(i: int) -> None:
            url = proxies[i % len(proxies)].url
            body = {**CLIP, "prompt": f"client {i}"}
            gate.wait()
            if i % 2:  # a tool signing Kling's JWT with the virtual secret key
                try:
                    with jwt_client(key, url) as kc:
                        kc.create(CREATE_PATH, body)
                    got: tuple[int, int | None, str] = (200, 0, "")
                except KlingAPIError as exc:
                    got = (exc.http_status or 0, exc.code, exc.message)
            else:  # a tool sending the virtual API key as a bearer token
                r = httpx.post(
                    url + CREATE_PATH,
                    json=body,
                    headers={"Authorization": f"Bearer {key.api_key}"},
                    timeout=20,
                )
                doc = r.json()
                got = (r.status_code, doc.get("code"), doc.get("message", ""))
            with lock:
                answers.append(got)

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            stop.set()
            sampler.join(10)

        assert len(answers) == 50
        accepted = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] != 200]
        assert len(accepted) == 10, answers  # nothing ends during the burst: exactly ten fit
        assert {(status, code) for status, code, _ in refused} == {(429, 1102)}, refused
        assert all(scope in message for _, _, message in refused)  # it names the budget
        assert len(sim.state.tasks) == 10  # only the accepted ones ever reached Kling
        assert peaks and max(peaks) <= Decimal(15)
        u = ledger.usage(scope)
        assert u.used + u.reserved <= u.limit == Decimal(15)
        assert u.reserved == 10 * CLIP_UNITS
        held = ledger.reservations(status="reserved")
        assert len(held) == 10
        assert {r.task_id for r in held} == set(sim.state.tasks)  # every accepted task attached
        assert {r.idempotency_key for r in held} == {t.external_task_id for t in sim.state.tasks.values()}

        clock.advance(5)  # the ten end at Kling; the settlers of every process see them
        wait_until(lambda: not ledger.reservations(status="reserved"), "the ten tasks are settled")
        time.sleep(0.5)  # more passes of every settler: nothing is charged twice
        kling_charged = [t.charged for t in sim.state.tasks.values()]
        assert kling_charged == [CLIP_UNITS] * 10
        charges = ledger.charges()
        assert sorted(c.task_id or "" for c in charges) == sorted(sim.state.tasks)
        assert all(c.actual == CLIP_UNITS for c in charges)
        u = ledger.usage(scope)
        assert (u.used, u.reserved) == (sum(kling_charged), Decimal(0))


def test_fifty_clients_one_proxy(ledger_url: str, processes: Callable[[str, str], Processes]) -> None:
    clock = ManualClock()  # nothing ends during the burst: Kling's clock stands still
    with kling(clock=clock, task_seconds=5) as (url, sim):
        group = processes(url, ledger_url)
        burst(ledger_url, group.start(), sim, clock, "burst")


def test_fifty_clients_two_proxies_on_postgres(
    pg_url: str, processes: Callable[[str, str], Processes]
) -> None:
    clock = ManualClock()
    with kling(clock=clock, task_seconds=5) as (url, sim):
        group = processes(url, pg_url)
        burst(pg_url, group.start(2), sim, clock, "burst2")


# -- 2. SIGKILL between Kling's accept and the attach --------------------------------------------


class HoldCreates:
    """ASGI middleware around the simulator: a create is accepted by Kling (its task exists),
    then its answer is held until the test releases it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CREATE_PATH:
            await self.app(scope, receive, send)
            return

        async def held(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                while not self.release.is_set():
                    await anyio.sleep(0.01)
            await send(message)

        await self.app(scope, receive, held)


def test_sigkill_between_accept_and_attach(
    ledger_url: str, processes: Callable[[str, str], Processes]
) -> None:
    clock = ManualClock()
    inner = create_app(
        AK, SK, api_key=API_KEY, clock=clock, task_seconds=5, concurrency=20, video_units=10_000
    )
    sim = inner.state.simulator
    held = HoldCreates(inner)
    with ExitStack() as stack:
        url = stack.enter_context(serve(held))
        stack.callback(held.release.set)  # never leave the simulator's answer hanging
        group = processes(url, ledger_url)
        (first,) = group.start(settle_interval=60)  # its settler must not attach it first
        ledger = stack.enter_context(open_ledger(ledger_url))
        key = new_key(ledger, "killed", Decimal(15))
        other = new_key(ledger, "other", Decimal(15))

        lost: list[BaseException] = []

        def create() -> None:
            try:
                with jwt_client(key, first.url) as kc:
                    kc.create(CREATE_PATH, {**CLIP, "prompt": "killed mid-create"})
            except BaseException as exc:  # the proxy dies: the client sees its connection cut
                lost.append(exc)

        client = threading.Thread(target=create)
        client.start()
        wait_until(lambda: len(sim.state.tasks) == 1, "Kling accepted the create")
        (task,) = sim.state.tasks.values()
        (res,) = ledger.reservations()
        assert res.status == "reserved" and res.task_id is None  # accepted, not attached
        assert res.idempotency_key == task.external_task_id  # the id the proxy injected
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
        held.release.set()
        client.join(30)
        assert len(lost) == 1  # the client never got an answer

        (again,) = group.start(settle_interval=0.2)
        wait_until(
            lambda: (r := ledger.get_reservation(res.id)) is not None and r.task_id == task.task_id,
            "the restarted proxy attached the task it found by its external id",
        )
        assert ledger.reservations(status="reserved")[0].id == res.id
        wait_until(
            lambda: ledger.proxy.owner(task_id=task.task_id) is not None,
            "the proxy's own row of the task has its id too",
        )
        owned = ledger.proxy.owner(task_id=task.task_id)
        assert owned is not None and owned.key_id == key.record.id
        assert owned.external_task_id == task.external_task_id
        clock.advance(5)  # the task ends at Kling
        wait_until(
            lambda: (r := ledger.get_reservation(res.id)) is not None and r.status == "committed",
            "the restarted proxy charged the task",
        )
        assert task.status == "succeed" and task.charged == CLIP_UNITS

        # the client reads its task through the restarted proxy, with its own key; another cannot
        with jwt_client(key, again.url) as kc:
            seen = kc.get_task(CREATE_PATH, task.task_id)
            listed = kc.list_tasks(CREATE_PATH)
        assert seen.task_id == task.task_id and seen.succeeded
        assert [t.task_id for t in listed] == [task.task_id]
        with jwt_client(other, again.url) as kc, pytest.raises(KlingAPIError) as refused:
            kc.get_task(CREATE_PATH, task.task_id)
        assert (refused.value.http_status, refused.value.code) == (404, 1203)

        time.sleep(0.6)  # a few more settler passes and the query above: still charged once
        charges = ledger.charges()
        assert len(charges) == 1
        assert charges[0].task_id == task.task_id and charges[0].actual == task.charged
        assert [r.id for r in ledger.reservations(status="committed")] == [res.id]
        assert ledger.reservations(status="reserved") == []
        assert ledger.usage("key:killed").used == task.charged
        assert ledger.totals()["units"]["charged"] == task.charged
        assert len(sim.state.tasks) == 1  # sent once


# -- 3. revocation, seen by every process --------------------------------------------------------


def test_revoked_key_is_refused_by_every_process(
    ledger_url: str, processes: Callable[[str, str], Processes]
) -> None:
    with kling(task_seconds=60) as (url, sim), open_ledger(ledger_url) as ledger:
        key = new_key(ledger, "leaving", Decimal(15))
        group = processes(url, ledger_url)
        both = group.start(2)
        bearer = {"Authorization": f"Bearer {key.api_key}"}
        for proxy in both:  # the key works on each process (and each has looked it up)
            with jwt_client(key, proxy.url) as kc:
                kc.create(CREATE_PATH, {**CLIP, "prompt": f"before on {proxy.pid}"})
            assert httpx.get(proxy.url + "/account/costs", headers=bearer, timeout=10).status_code == 200
        assert len(sim.state.tasks) == 2

        Keys(ledger, MasterKey(MASTER.encode(), "test")).revoke("leaving")

        for proxy in both:  # the very next request on each process, either credential
            r = httpx.post(
                proxy.url + CREATE_PATH, json={**CLIP, "prompt": "after"}, headers=bearer, timeout=10
            )
            assert (r.status_code, r.json()["code"]) == (401, 1000), r.text
            with jwt_client(key, proxy.url) as kc, pytest.raises(KlingAPIError) as refused:
                kc.account_costs()
            assert (refused.value.http_status, refused.value.code) == (401, 1000)
        assert len(sim.state.tasks) == 2  # nothing more reached Kling
