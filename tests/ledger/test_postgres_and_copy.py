from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from kling_cost import StorageError
from kling_cost.cli import app
from kling_cost.ledger import Ledger, copy_ledger, open_ledger
from kling_cost.ledger.schema import SCHEMA_VERSION
from kling_cost.ledger.settle import Settlement
from tests.helpers import POSTGRES_URL, FakeClock, fresh_postgres_url, need_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Any:
    need_postgres()
    url = fresh_postgres_url()
    yield url
    with open_ledger(url) as led:
        led.backend.drop_schema()  # type: ignore[attr-defined]


def state(led: Ledger) -> tuple[Any, ...]:
    return (
        [b.to_dict() for b in led.budgets()],
        [u.to_dict() for u in led.usages()],
        [r.to_dict() for r in sorted(led.reservations(), key=lambda r: r.id)],
        [c.to_dict() for c in led.charges()],
    )


def fill(led: Ledger, clock: FakeClock) -> None:
    led.set_budget("account", 500, "month", tz="Europe/Paris")
    led.set_budget("project:film", 100, "day", max_per_request=40, thresholds=["0.7"])
    for i in range(5):
        r = led.reserve(
            Decimal(i + 1) * 3,
            ["project:film", f"key:k{i % 2}"],
            metadata={"prompt": f"shot {i}", "model": "kling-v2-6", "duration": 5},
        )
        clock.advance(minutes=7)
        if i % 2:
            led.release(r)
        else:
            led.commit(r, Decimal(i + 1) * 3 - Decimal("0.5"), task_id=f"t{i}")
    led.reserve(4, ["user:bob"], idempotency_key="still-open")


def test_copy_sqlite_to_postgres_and_back(tmp_path: Path, pg_url: str) -> None:
    clock = FakeClock()
    first = f"sqlite:///{tmp_path / 'a.db'}"
    with open_ledger(first, clock=clock) as a:
        fill(a, clock)
        expected = state(a)
    code = CliRunner().invoke(app, ["ledger", "copy", "--from", first, "--to", pg_url, "--json"])
    assert code.exit_code == 0, code.stderr
    with open_ledger(pg_url, clock=clock) as pg:
        assert state(pg) == expected
        pg.commit(pg.reserve(1, ["project:film"]), 1)  # identities continue after the copy
        expected = state(pg)
    back = f"sqlite:///{tmp_path / 'b.db'}"
    with open_ledger(pg_url, clock=clock) as pg, open_ledger(back, clock=clock) as b:
        result = copy_ledger(pg, b)
        assert result.rows["charges"] == 4
        assert state(b) == expected
        again = CliRunner().invoke(app, ["ledger", "copy", "--from", pg_url, "--to", back])
        assert again.exit_code == 2 and "already has data" in again.stderr


def test_killed_backend_mid_transaction_loses_and_doubles_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    led = open_ledger(pg_url)
    led.set_budget("account", 100)
    r = led.reserve(10, metadata={"model": "kling-v1"})
    # The general path's transaction (the one-statement path is killed in test_pg_fast.py).
    monkeypatch.setattr(led, "_fast", None)
    original = Settlement.insert_charge

    def kill_then_continue(self: Settlement, cur: Any, *args: Any) -> None:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        original(self, cur, *args)

    monkeypatch.setattr(Settlement, "insert_charge", kill_then_continue)
    with pytest.raises(StorageError):
        led.commit(r, 10)
    monkeypatch.setattr(Settlement, "insert_charge", original)
    u = led.usage("account")
    assert (u.used, u.reserved) == (0, 10)  # the half-done commit left nothing behind
    assert led.charges() == []
    done = led.commit(r, 10)  # the pool reconnected
    assert done.status == "committed"
    assert led.commit(r, 10).status == "committed"
    u = led.usage("account")
    assert (u.used, u.reserved) == (10, 0)
    assert len(led.charges()) == 1
    led.close()


def test_two_processes_start_at_once_and_migrate_safely(pg_url: str) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        versions = pool.map(_migrate, [pg_url] * 3)
    assert versions == [SCHEMA_VERSION] * 3


def _migrate(url: str) -> int:
    with open_ledger(url) as led:
        return led.migrate()
