from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kling_cost.ledger import Ledger, open_ledger
from tests.helpers import FakeClock, fresh_postgres_url, need_postgres

BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
]


def _postgres_schema() -> Iterator[str]:
    """A fresh PostgreSQL ledger URL (its own schema), dropped afterwards."""
    need_postgres()
    url = fresh_postgres_url()
    yield url
    cleanup = open_ledger(url)
    cleanup.backend.drop_schema()  # type: ignore[attr-defined]
    cleanup.close()


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    yield from _postgres_schema()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL ledger URL only (tests of what exists on PostgreSQL alone)."""
    yield from _postgres_schema()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A SQLite ledger file with a generous ``project:a`` day budget (the writers' line tests)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with open_ledger(url) as setup:
        setup.set_budget("project:a", 10**6)
    yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(ledger_url: str, clock: FakeClock) -> Iterator[Ledger]:
    led = open_ledger(ledger_url, clock=clock)
    yield led
    led.close()
