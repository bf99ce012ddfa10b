"""The PostgreSQL backend's spare connection (``ledger/pg_spare.py``): the one-statement calls
keep one pooled connection between them, and it never costs anyone a connection: a thread
waiting for the pool gets it, closing gives it back, a kept connection the server dropped is
replaced, and a pool the application passed in is never held on to."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from kling_cost.ledger import Ledger, open_ledger
from kling_cost.ledger.pg_spare import Spare
from kling_cost.ledger.postgres import PostgresBackend
from tests.helpers import POSTGRES_URL

pytestmark = pytest.mark.postgres


def _admin() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True)


def _named(pg_url: str) -> tuple[str, str]:
    name = f"spare-{uuid.uuid4().hex[:8]}"
    return f"{pg_url}&application_name={name}", name


def _connections(name: str) -> int:
    with _admin() as admin:
        return int(
            admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()[0]
        )


def test_a_pool_of_one_serves_calls_and_transactions_of_two_threads(pg_url: str) -> None:
    """With ``max_size=1`` the only connection is the one the calls keep: a transaction of
    another thread waiting for the pool must get it (else it waits ``connect_timeout`` and
    fails as "unreachable")."""
    with open_ledger(pg_url, max_size=1, connect_timeout=2, fold_interval=None) as led:
        led.set_budget("project:a", 10**6)
        errors: list[BaseException] = []

        def pairs() -> None:
            try:
                for _ in range(150):
                    led.commit(led.reserve(1, ["project:a"]), 1)
            except BaseException as exc:
                errors.append(exc)

        def reads() -> None:
            try:
                for _ in range(150):
                    led.usage("project:a")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=pairs), threading.Thread(target=reads)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert time.monotonic() - started < 30
        assert led.usage("project:a").used == Decimal(150)


def test_closing_gives_the_kept_connection_back(pg_url: str) -> None:
    url, name = _named(pg_url)
    led = open_ledger(url, fold_interval=None)
    led.set_budget("project:a", 100)
    led.commit(led.reserve(1, ["project:a"]), 1)
    assert _connections(name) >= 1
    led.close()
    deadline = time.monotonic() + 5
    while _connections(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections(name) == 0


def test_a_kept_connection_the_server_dropped_is_replaced(pg_url: str) -> None:
    url, name = _named(pg_url)
    with open_ledger(url, fold_interval=None) as led:
        led.set_budget("project:a", 100)
        led.commit(led.reserve(1, ["project:a"]), 1)  # the calls now keep a connection
        with _admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            )
        time.sleep(0.2)
        for _ in range(3):
            led.commit(led.reserve(1, ["project:a"]), 1)
        assert led.usage("project:a").used == Decimal(4)


def test_a_pool_passed_in_gets_every_connection_back(pg_url: str) -> None:
    """The application's own pool may serve other code too: nothing is kept out of it."""
    backend_url = pg_url
    conninfo = POSTGRES_URL.split("?")[0]
    schema = pg_url.rsplit("schema=", 1)[1]
    with ConnectionPool(
        conninfo,
        min_size=1,
        max_size=2,
        kwargs={"autocommit": True, "options": f"-c search_path={schema}"},
        open=True,
    ) as pool:
        led = Ledger(PostgresBackend(backend_url, pool=pool), fold_interval=None)
        led.set_budget("project:a", 100)
        for _ in range(3):
            led.commit(led.reserve(1, ["project:a"]), 1)
        stats = pool.get_stats()
        assert stats["pool_available"] == stats["pool_size"]
        led.close()


def test_spare_keeps_only_an_idle_connection_while_nobody_waits_and_not_after_closing() -> None:
    spare = Spare()
    far = time.monotonic() + 60
    with psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True) as conn:
        cur = conn.cursor()
        assert spare.take() is None
        assert spare.take_or_wait() is None  # this caller now waits for the pool
        assert not spare.keep(conn, cur, far), "kept while a thread waits for the pool"
        spare.waited()
        assert not spare.keep(conn, cur, time.monotonic() - 1), "kept past its time"
        conn.execute("BEGIN")
        assert not spare.keep(conn, cur, far), "kept inside a transaction"
        conn.execute("ROLLBACK")
        assert spare.keep(conn, cur, far)
        assert spare.take_or_wait() == (conn, cur, far)  # taken: no wait counted
        assert spare.keep(conn, cur, far)
        assert spare.drain() == [conn]
        assert not spare.keep(conn, cur, far), "kept after the backend closed"
        assert not Spare(enabled=False).keep(conn, cur, far), "kept from a pool passed in"
