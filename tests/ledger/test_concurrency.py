from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import Ledger, open_ledger
from tests.helpers import FakeClock
from tests.ledger.workers import hammer, reserve_and_hang

pytestmark = pytest.mark.slow


def test_no_overspend_under_contention(ledger_url: str) -> None:
    setup = open_ledger(ledger_url)
    setup.set_budget("account", 150)
    setup.set_budget("project:a", 60)
    setup.set_budget("project:b", 50)
    setup.set_budget("key:k1", 45)
    setup.set_budget("key:k2", 40, "month")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        outcomes = list(pool.map(hammer, [ledger_url] * 4, range(4), [2] * 4))
    committed: dict[str, Decimal] = {}
    for outcome in outcomes:
        for scope, value in outcome.items():
            committed[scope] = committed.get(scope, Decimal(0)) + Decimal(value)
    usages = setup.usages()
    assert len(usages) == 5
    for u in usages:
        assert u.used + u.reserved <= u.limit, u.to_dict()
        assert u.reserved == 0
        assert u.used == committed.get(u.scope, 0), u.scope
    # the workers kept going until refused: the shared account budget is nearly exhausted
    assert setup.usage("account").remaining < 9
    assert setup.totals()["units"]["charged"] == committed["account"]
    setup.close()


def test_idempotency_under_concurrency(ledger: Ledger) -> None:
    ledger.set_budget("account", 100)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def worker() -> None:
        barrier.wait()
        r = ledger.reserve(10, ["project:x"], idempotency_key="same-key")
        ids.append(r.id)
        ledger.commit(r, 10)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert len(ledger.charges()) == 1
    assert ledger.usage("account").used == 10 and ledger.usage("account").reserved == 0


def test_crash_between_reserve_and_commit(ledger_url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    setup = open_ledger(ledger_url)
    setup.set_budget("project:crash", 50)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=reserve_and_hang, args=(ledger_url, str(ready)))
    child.start()
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    res_id = ready.read_text()
    assert setup.usage("project:crash").reserved == 40
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join()
    setup.close()
    later = FakeClock()
    later.set(__import__("datetime").datetime.now(__import__("datetime").UTC) + timedelta(seconds=61))
    with open_ledger(ledger_url, clock=later) as after:
        assert after.reserve(45, ["project:crash"]).status == "reserved"  # lease reclaimed first
        assert after.get_reservation(res_id).status == "expired"  # type: ignore[union-attr]
        u = after.usage("project:crash")
        assert (u.used, u.reserved) == (0, 45)
        if hasattr(after.backend, "integrity_check"):
            assert after.backend.integrity_check() == "ok"  # type: ignore[attr-defined]
