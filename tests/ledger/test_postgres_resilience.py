"""The PostgreSQL ledger when the server misbehaves: dropped connections, an outage, a closed
ledger, clocks that disagree between machines, URLs that carry a password."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from typer.testing import CliRunner

from kling_cost import BudgetExceeded, LedgerClosed, StorageError
from kling_cost.alerts import Deliverer
from kling_cost.budgets import window_at
from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from tests.helpers import POSTGRES_URL, FakeClock, need_postgres
from tests.servers import TcpRelay

PASSWORD = "s3cr3t-Pa55"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema name, dropped afterwards (whatever URL the test reached it through)."""
    need_postgres()
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with open_ledger(_url(name)) as led:
        led.backend.drop_schema()  # type: ignore[attr-defined]


def _url(schema: str, *, netloc: str | None = None, **params: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    query = "&".join([f"schema={schema}", *(f"{k}={v}" for k, v in params.items())])
    return f"postgresql://{netloc or parts.netloc}{parts.path}?{query}"


def _terminate(application_name: str) -> None:
    """Terminate every backend of one ledger's pool (and only those: the server is shared)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        )
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the backends did not go away"
            time.sleep(0.02)


def _server_now() -> datetime:
    with psycopg.connect(POSTGRES_URL) as admin:
        row = admin.execute("SELECT now()").fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment


# -- item 14: the pool recovers ------------------------------------------------------------------


def test_every_operation_succeeds_after_all_pooled_backends_are_terminated(schema: str) -> None:
    name = f"kc_{uuid.uuid4().hex[:10]}"
    with open_ledger(_url(schema, application_name=name), min_size=6) as led:
        led.set_budget("account", 1000)
        led.commit(led.reserve(5), 5)
        for round_ in range(3):
            _terminate(name)
            for i in range(12):  # every kind of operation, each on a pool full of dead connections
                r = led.reserve(2, ["project:a"], idempotency_key=f"{name}-{round_}-{i}")
                led.attach_task(r, f"task-{round_}-{i}")
                led.commit(r, 1) if i % 2 else led.release(r)
                assert led.usage("account").used == 5 + 6 * round_ + (i + 1) // 2
        assert led.usage("account").used == 5 + 18 and led.usage("account").reserved == 0


def test_an_outage_fails_closed_and_every_operation_after_it_succeeds(schema: str) -> None:
    target = urlsplit(POSTGRES_URL)
    with TcpRelay((target.hostname or "127.0.0.1", target.port or 5432)) as relay:
        url = _url(schema, netloc=f"{target.username}@127.0.0.1:{relay.port}")
        with open_ledger(url, min_size=3, connect_timeout=1) as led:
            led.set_budget("account", 100)
            held = led.reserve(10)
            relay.stop()  # the server goes down
            down = time.monotonic()
            for attempt in (lambda: led.reserve(10), lambda: led.commit(held, 10), led.usages):
                with pytest.raises(StorageError) as caught:
                    attempt()
                assert "\n" not in str(caught.value)
            # Stay down long enough for a pool retrying on a backoff to be asleep when it returns.
            time.sleep(max(0.0, 3.5 - (time.monotonic() - down)))
            relay.start()  # back
            for _ in range(10):
                led.commit(led.reserve(1), 1)
            assert led.commit(held, 10).status == "committed"
            u = led.usage("account")
            assert (u.used, u.reserved) == (Decimal(20), Decimal(0))  # nothing lost, nothing doubled


NOISE_SCRIPT = """
import sys, psycopg
from kling_cost.ledger import open_ledger
url, name, admin = sys.argv[1:]
with open_ledger(url, min_size=4) as led:
    led.set_budget("account", 10)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
        )
    import time; time.sleep(0.3)
    for _ in range(6):
        led.commit(led.reserve(1), 1)
    print(led.usage("account").used)
"""


def test_dropped_connections_print_nothing_on_the_terminal(schema: str) -> None:
    name = f"kc_{uuid.uuid4().hex[:10]}"
    run = subprocess.run(
        [sys.executable, "-c", NOISE_SCRIPT, _url(schema, application_name=name), name, POSTGRES_URL],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stdout.strip(), run.stderr) == (0, "6.000", "")


# -- item 13: one clear line -----------------------------------------------------------------------


def test_cli_with_an_unreachable_postgres_prints_one_line_and_exits_4() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kling_cost", "budget", "list", "--ledger", UNREACHABLE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = run.stderr.splitlines()
    assert run.returncode == 4, run.stderr
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the PostgreSQL ledger"), lines
    assert "Connection refused" in lines[0] and "start the server" in lines[0]
    assert run.stdout == ""


CLOSED_CALLS = [
    ("reserve", lambda led, r: led.reserve(1)),
    ("commit", lambda led, r: led.commit(r, 1)),
    ("release", lambda led, r: led.release(r)),
    ("attach_task", lambda led, r: led.attach_task(r, "t-1")),
    ("extend", lambda led, r: led.extend(r, timedelta(minutes=5))),
    ("charge", lambda led, r: led.charge(1)),
    ("sweep", lambda led, r: led.sweep()),
    ("set_budget", lambda led, r: led.set_budget("project:x", 5)),
    ("budgets", lambda led, r: led.budgets()),
    ("usages", lambda led, r: led.usages()),
    ("charges", lambda led, r: led.charges()),
    ("reservations", lambda led, r: led.reservations()),
    ("cache_lookup", lambda led, r: led.cache_lookup("f" * 64)),
    ("migrate", lambda led, r: led.migrate()),
    ("deliver", lambda led, r: Deliverer(led).deliver_pending()),
]


@pytest.mark.parametrize(("what", "call"), CLOSED_CALLS, ids=[c[0] for c in CLOSED_CALLS])
def test_every_operation_on_a_closed_ledger_says_it_is_closed(
    ledger_url: str, clock: FakeClock, what: str, call: Any
) -> None:
    led = open_ledger(ledger_url, clock=clock)
    led.set_budget("account", 100)
    held = led.reserve(3)
    led.close()
    led.close()  # closing twice is harmless
    with pytest.raises(LedgerClosed, match=r"is closed; open it again") as caught:
        call(led, held)
    assert isinstance(caught.value, StorageError)
    with open_ledger(ledger_url, clock=clock) as again:  # nothing happened
        assert again.usage("account").reserved == 3 and again.charges() == []


# -- item 12: the password never shows -------------------------------------------------------------


def test_a_postgres_password_never_shows_in_repr_messages_or_output(schema: str) -> None:
    parts = urlsplit(POSTGRES_URL)
    url = _url(schema, netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}")
    led = open_ledger(url)  # the test server trusts any password
    shown = [repr(led), str(led), led.url]
    assert f"{parts.username}:***@" in led.url
    led.close()
    with pytest.raises(LedgerClosed) as closed:
        led.budgets()
    unreachable = url.replace(f"{parts.hostname}:{parts.port or 5432}", "127.0.0.1:1")
    with pytest.raises(StorageError) as down:
        open_ledger(unreachable, connect_timeout=1)
    with pytest.raises(StorageError) as query_password:
        open_ledger(f"postgresql://nobody@127.0.0.1:1/test?password={PASSWORD}", connect_timeout=1)
    typo = CliRunner().invoke(app, ["budget", "list", "--ledger", url.replace("postgresql", "postgresq")])
    migrate = CliRunner().invoke(app, ["ledger", "migrate", "--ledger", url])
    assert migrate.exit_code == 0 and typo.exit_code == 2
    shown += [str(closed.value), str(down.value), str(query_password.value)]
    shown += [typo.stdout, typo.stderr, migrate.stdout, migrate.stderr]
    for text in shown:
        assert PASSWORD not in text, text
    assert "password=***" in str(query_password.value)
    assert ":***@" in str(down.value) and ":***@" in migrate.stdout and ":***@" in typo.stderr


# -- item 15: one clock per ledger, the server's ------------------------------------------------------


@pytest.fixture
def skewed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Make this machine's clock (the ledger's default clock) run ``delta`` ahead for the
    ledgers opened afterwards: another machine with a wrong clock."""
    from kling_cost.ledger import backend
    from kling_cost.timestamps import utc_now

    def skew(delta: timedelta) -> None:
        monkeypatch.setattr(backend, "utc_now", lambda: utc_now() + delta)
        # The skew is real: SQLite (one machine) keeps this machine's clock, wrong as it is.
        with open_ledger(f"sqlite:///{tmp_path / 'local.db'}") as local:
            assert abs(local.clock() - delta - _server_now()) < timedelta(seconds=30)

    yield skew


def test_a_machine_whose_clock_runs_ahead_does_not_free_other_machines_holds(
    schema: str, skewed: Any
) -> None:
    with open_ledger(_url(schema)) as honest:
        honest.set_budget("account", 100)
        held = honest.reserve(60, ttl=timedelta(minutes=30))
        skewed(timedelta(hours=3))
        with open_ledger(_url(schema)) as ahead:
            assert ahead.sweep() == 0  # the honest machine's hold is 30 min from expiring
            with pytest.raises(BudgetExceeded):
                ahead.reserve(50)  # 60 are still held: 60 + 50 > 100
            assert abs(ahead.clock() - _server_now()) < timedelta(seconds=30)  # not 3 h ahead
            mine = ahead.reserve(40, ttl=timedelta(minutes=1))
            assert abs(mine.expires_at - (_server_now() + timedelta(minutes=1))) < timedelta(seconds=30)
        assert honest.sweep() == 0  # and the skewed machine's lease is not 3 h long either
        assert honest.commit(held, 60).status == "committed"
        u = honest.usage("account")
        assert (u.used, u.reserved) == (Decimal(60), Decimal(40))


@pytest.mark.parametrize("delta", [timedelta(days=3), -timedelta(days=40)], ids=["ahead", "behind"])
def test_windows_follow_the_servers_clock_not_the_machines(
    schema: str, skewed: Any, delta: timedelta
) -> None:
    skewed(delta)
    with open_ledger(_url(schema)) as led:
        led.set_budget("account", 100, "day")
        led.set_budget("project:a", 100, "month", tz="Asia/Tokyo")
        before = _server_now()
        r = led.reserve(7, ["project:a"])
        usages = {u.scope: u for u in led.usages()}
        after = _server_now()
    keys = {
        (kind, tz): {window_at(kind, tz, before).key, window_at(kind, tz, after).key}
        for kind, tz in (("day", "UTC"), ("month", "Asia/Tokyo"))
    }
    assert {key for _, key in r.windows} <= keys["day", "UTC"] | keys["month", "Asia/Tokyo"]
    assert usages["account"].window.key in keys["day", "UTC"] and usages["account"].reserved == 7
    assert usages["project:a"].window.key in keys["month", "Asia/Tokyo"]
    assert before - timedelta(seconds=1) <= r.created_at <= after + timedelta(seconds=1)


def test_an_injected_clock_still_decides_on_postgres(schema: str, clock: FakeClock) -> None:
    with open_ledger(_url(schema), clock=clock) as led:
        led.set_budget("account", 100)
        r = led.reserve(10, ttl=timedelta(minutes=5))
        assert (r.created_at, led.clock()) == (clock(), clock())
        clock.advance(minutes=6)
        assert led.sweep() == 1 and led.usage("account").reserved == 0


def test_connection_options_with_spaces_reach_the_server(pg_url: str) -> None:
    """``options=-c name=value`` (libpq's way to set a setting per connection) keeps its space:
    the URL is re-encoded for libpq with %20, never ``+`` (which libpq reads as a plus sign)."""
    url = pg_url + "&options=-c%20statement_timeout%3D4321"
    with open_ledger(url) as led, led.transaction(snapshot=True) as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "4321ms"
