"""A ledger with known data and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from kling_cost.ledger import Ledger, open_ledger
from tests.helpers import FakeClock


def seed(ledger: Ledger, clock: FakeClock) -> None:
    """Two days of generations, a refund, a cache hit, three budgets and their alerts."""
    clock.set(datetime(2026, 6, 14, 9, 0, tzinfo=UTC))
    ledger.set_budget("account", 200, "day")
    ledger.set_budget("project:film", 1000, "month", thresholds=["0.5", "0.9"])
    ledger.set_budget("key:alice", 50, "day")
    plan = [
        ("kling-v2-1", "pro", "project:film", "key:alice", "35", "35"),
        ("kling-v1-6", "std", "project:ads", "key:bob", "10", "12.5"),
        ("kling-v2-1", "std", "project:film", "key:bob", "20", "20"),
    ]
    for day in range(2):
        clock.set(datetime(2026, 6, 14 + day, 9, 0, tzinfo=UTC))
        for i, (model, mode, project, key, est, act) in enumerate(plan):
            meta = {"model": model, "mode": mode, "duration": 5, "prompt": f"shot {day}-{i}: a red fox"}
            res = ledger.reserve(est, [project, key], metadata=meta)
            ledger.attach_task(res, f"task-{day}-{i}")
            ledger.commit(res, act)
            clock.advance(hours=2)
    failed = ledger.reserve("15", ["project:ads"], metadata={"model": "kling-v1-6", "mode": "pro"})
    ledger.attach_task(failed, "task-failed")
    ledger.release(failed)
    ledger.record_cache_hit("35", ["project:film"], metadata={"model": "kling-v2-1", "mode": "pro"})
    held = ledger.reserve("5", ["key:alice"], metadata={"model": "kling-v2-1"})
    assert held.amount == 5
    clock.set(datetime(2026, 6, 15, 18, 0, tzinfo=UTC))
    alert = [a for a in ledger.alerts(scope="key:alice") if a.threshold == "0.8"]
    assert alert and alert[0].status == "pending"  # written by the outbox when 80 % was crossed


@pytest.fixture
def known(tmp_path: Path) -> Iterator[tuple[Ledger, FakeClock]]:
    clock = FakeClock()
    led = open_ledger(f"sqlite:///{tmp_path / 'dash.db'}", clock=clock)
    seed(led, clock)
    yield led, clock
    led.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def serve() -> Callable[[Any], Any]:
    return serving
