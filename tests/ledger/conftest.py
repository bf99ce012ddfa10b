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


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    need_postgres()
    url = fresh_postgres_url()
    yield url
    cleanup = open_ledger(url)
    cleanup.backend.drop_schema()  # type: ignore[attr-defined]
    cleanup.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(ledger_url: str, clock: FakeClock) -> Iterator[Ledger]:
    led = open_ledger(ledger_url, clock=clock)
    yield led
    led.close()
