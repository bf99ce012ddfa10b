"""Outside review of commit 8bcacbe (the deferred report rollup, migration 13): each test here
failed on that commit. See the docstrings for what each one shows."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest

from kling_cost.errors import ConfigurationError
from kling_cost.ledger import open_ledger
from kling_cost.reports import report
from tests.helpers import POSTGRES_URL, FakeClock, run_python

pytestmark = pytest.mark.postgres


def test_a_plus_in_a_url_option_reaches_the_server_as_a_plus(pg_url: str) -> None:
    """libpq (and psql) read ``+`` in a URI's query literally. Before 8bcacbe the options were
    re-encoded with ``quote_plus``, which happened to give the ``+`` back; with ``quote`` the
    ``+`` that ``parse_qsl`` turned into a space goes to the server as a space: a password,
    ``sslpassword``, ``application_name`` or ``options`` value holding ``+`` is changed."""
    with (
        open_ledger(pg_url + "&application_name=kling+cost", fold_interval=None) as led,
        led.transaction() as cur,
    ):
        cur.execute("SHOW application_name")
        assert cur.fetchone()[0] == "kling+cost"  # psql gives 'kling+cost' for this URI


def test_a_read_only_auto_report_never_raises_when_a_charge_lands_meanwhile(
    pg_url: str, clock: FakeClock
) -> None:
    """README: a report on a connection that may not write reads the raw charges instead
    (``source="auto"``). ``report`` probes with ``caught_up()`` (nothing pending: True), then
    ``RollupStore.sums`` folds again; a charge another process commits in between makes that
    second fold fail with "cannot execute DELETE in a read-only transaction", and the report
    raises StorageError instead of answering. (Here the other process's commit is placed in
    that window; on a busy ledger it lands there by itself now and then.)"""
    with open_ledger(pg_url, clock=clock, fold_interval=None) as led:
        led.set_budget("project:a", 1000)
        led.commit(led.reserve("1", ["project:a"]), actual="1")
        led.rollup.fold()
        read_only = pg_url + "&options=-c%20default_transaction_read_only%3Don"
        with open_ledger(read_only, clock=clock, fold_interval=None) as reader:
            probe = reader.rollup.caught_up

            def caught_up_then_a_commit_elsewhere() -> bool:
                answer = probe()
                led.commit(led.reserve("1", ["project:a"]), actual="1")
                return answer

            reader.rollup.caught_up = caught_up_then_a_commit_elsewhere  # type: ignore[method-assign]
            rep = report(reader, "model", tz="UTC")  # raised StorageError on 8bcacbe
            assert rep.totals


_UNCLOSED = """
import gc, sys, threading, time
from kling_cost.ledger import open_ledger
url = sys.argv[1] if len(sys.argv) > 1 else {url!r}
with open_ledger(url, fold_interval=None) as setup:
    setup.set_budget("project:a", 10**6)
before = len(threading.enumerate())
def work():
    led = open_ledger(url, min_size=1, max_size=2)
    led.commit(led.reserve("1", ["project:a"]), actual="1")  # dropped without close()
for _ in range(5):
    work()
for _ in range(3):
    gc.collect()
    time.sleep(0.3)
print(len(threading.enumerate()) - before)
print(sum(t.name.startswith("kling-cost-rollup") for t in threading.enumerate()))
with open_ledger(url) as cleanup:
    cleanup.backend.drop_schema()
"""


def test_a_ledger_dropped_without_close_does_not_leak_its_threads_and_connections() -> None:
    """Before 8bcacbe a PostgreSQL ledger that was dropped without ``close()`` was collected
    with its pool (threads, connections). Now its first charge starts a daemon fold thread
    that holds the ledger forever: five such ledgers leave 5 fold threads, 20 pool threads
    and 5 server connections behind (until max_connections runs out in a long process)."""
    url = f"{POSTGRES_URL}?schema=atk_unclosed_{int(time.time() * 1000) % 10**9}"
    done = run_python(_UNCLOSED.format(url=url), timeout=120)
    assert done.returncode == 0, done.stderr
    leaked_threads, fold_threads = (int(x) for x in done.stdout.split())
    assert fold_threads == 0
    assert leaked_threads == 0


class _Proxy:
    """A TCP proxy to the test server that can be cut (the server "goes away")."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.socks.append(client)
            if not self.up:
                continue  # a black hole: connected, never answered
            server = socket.create_connection(self.target)
            with self.lock:
                self.socks.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while self.up:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError
                    (b if sock is a else a).sendall(data)
        except OSError:
            pass
        for sock in (a, b):
            with suppress(OSError):
                sock.close()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for sock in self.socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self.socks.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxied_pg_url(pg_url: str) -> Iterator[tuple[str, _Proxy]]:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    proxy = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        yield pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{proxy.port}", 1), proxy
    finally:
        proxy.close()


def test_close_is_prompt_when_the_server_has_gone_away(proxied_pg_url: Any) -> None:
    """Before 8bcacbe ``close()`` of a ledger whose server had gone away returned at once. Now
    it joins the fold thread and folds once more, which waits a whole ``connect_timeout``
    (5 s by default, once or twice) for a connection that never comes."""
    url, proxy = proxied_pg_url
    led = open_ledger(url, fold_interval=0.2, connect_timeout=5)
    led.set_budget("project:a", 100)
    led.commit(led.reserve("1", ["project:a"]), actual="1")  # the fold thread starts
    time.sleep(0.5)
    led.commit(led.reserve("1", ["project:a"]), actual="1")  # noted, not yet folded
    proxy.cut()
    started = time.monotonic()
    led.close()
    assert time.monotonic() - started < 2.0  # 5.0 s on 8bcacbe


def test_a_huge_fold_interval_never_kills_the_fold_thread(pg_url: str) -> None:
    """``fold_interval=1e10`` passes ``check_fold_interval`` (positive, finite), but
    ``Event.wait(1e10)`` raises OverflowError in the thread: it dies with a traceback on
    stderr at the first charge and, its ``_thread`` still set, no background fold ever runs
    again. It should be refused at open (or capped at threading.TIMEOUT_MAX)."""
    died: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_value)
    try:
        try:
            led = open_ledger(pg_url, fold_interval=1e10)
        except ConfigurationError:
            return  # refused up front: fine
        try:
            led.set_budget("project:a", 100)
            led.commit(led.reserve("1", ["project:a"]), actual="1")
            time.sleep(0.3)
            assert not died, died
        finally:
            led.close()
    finally:
        threading.excepthook = hook
