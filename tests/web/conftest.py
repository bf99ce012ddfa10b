"""A ledger with known data and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from kling_cost.ledger import Ledger, open_ledger
from kling_cost.proxy.keys import Keys, MasterKey
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


def seed_keys(ledger: Ledger, clock: FakeClock) -> None:
    """Three virtual keys on 2026-06-15 12:00 UTC: alice (active, project:film, a day budget in
    Europe/Paris and a month budget, a task settled yesterday, one today, one still open), bob
    (revoked after a 20-unit task, a lifetime budget) and carol (expired, no budget)."""
    keys = Keys(ledger, MasterKey(b"x" * 32, "test"))
    clock.set(datetime(2026, 6, 13, 12, 0, tzinfo=UTC))
    keys.create("carol", expires_in=timedelta(days=1))
    alice = keys.create("alice", scopes=["project:film"], concurrency=3).record
    bob = keys.create("bob", scopes=["project:ads"]).record
    ledger.set_budget("key:alice", 50, "day", tz="Europe/Paris")
    ledger.set_budget("key:alice", 200, "month")
    ledger.set_budget("key:bob", 30, "lifetime")
    ledger.set_budget("project:film", 40, "day")

    def create(key: Any, external_id: str, amount: str, actual: str | None) -> None:
        assert ledger.proxy.claim_task(key, external_id, "/v1/videos/text2video", None)
        held = ledger.reserve(
            amount, key.all_scopes, idempotency_key=external_id, unit=key.unit, ttl=timedelta(hours=6)
        )
        ledger.attach_task(held, "task-" + external_id)
        ledger.proxy.attach(external_id, "task-" + external_id)
        if actual is not None:
            ledger.commit(held, actual)

    clock.set(datetime(2026, 6, 14, 10, 0, tzinfo=UTC))
    create(alice, "a-yesterday", "7", "7")
    clock.set(datetime(2026, 6, 15, 9, 0, tzinfo=UTC))
    create(alice, "a-today", "10", "12.5")
    create(alice, "a-open", "5", None)
    create(bob, "b-done", "20", "20")
    ledger.proxy.touch(alice, clock())
    clock.set(datetime(2026, 6, 15, 11, 0, tzinfo=UTC))
    keys.revoke("bob")
    clock.set(datetime(2026, 6, 15, 12, 0, tzinfo=UTC))


HOSTILE_NAME = "<img src=x onerror=\"document.body.dataset.pwned='1'\">&amp;"
HOSTILE_SCOPE = "project:</td><script>document.body.dataset.pwned='1'</script>"


def add_hostile_key(ledger: Ledger) -> None:
    """A key row no ``kling-cost keys create`` would write (names allow letters, digits and
    ``._@+-`` only, scopes are checked): a ledger edited by hand, or written by another tool."""
    ledger.proxy.add_key(
        name=HOSTILE_NAME,
        access_key="kcak-hostile",
        api_key_hash="0" * 64,
        salt="00",
        scopes=[HOSTILE_SCOPE],
        unit="units",
        max_per_request=None,
        models=None,
        concurrency=None,
        callback_hosts=(),
        expires_in=None,
    )


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


HOSTILE_PACK = "<img src=x onerror=\"document.body.dataset.pwned='1'\"><b>video</b> &amp; pack"
BILL_NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def seed_bill(ledger: Ledger, clock: FakeClock, *, hostile: bool = False) -> None:
    """2026-06-15 12:00 UTC. The account's day budget of 100 units, 15 units charged at 01:00,
    04:00, 07:00 and 10:00 (60 in 12 h: 5 an hour, projected 120 by midnight, out at 20:00); a
    month budget of project:film with one charge (too few for a projection). A packs snapshot
    at a video burn of 10 a day: video A (50 left, expires on day 3: 20 at risk), video B (100
    left, day 8: 50 at risk), an expired image pack (7 lost). A reconciliation run with three
    differences (one unknown to the ledger, one amount that differs, one not billed)."""
    from decimal import Decimal

    from kling_cost.bill.packs import SNAPSHOT_KEY, PackSnapshot, project
    from kling_cost.kling.models import ResourcePack
    from kling_cost.ledger.bill_store import BillStore
    from kling_cost.ledger.runs_store import BillDifference
    from kling_cost.pricing import load_catalog

    clock.set(datetime(2026, 6, 15, 0, 0, tzinfo=UTC))
    ledger.set_budget("account", 100, "day")
    ledger.set_budget("project:film", 1000, "month")
    for hour in (1, 4, 7, 10):
        clock.set(datetime(2026, 6, 15, hour, 0, tzinfo=UTC))
        held = ledger.reserve("15", ["project:film"], metadata={"model": "kling-v2-1", "mode": "pro"})
        ledger.attach_task(held, f"task-{hour}")
        ledger.commit(held, "15")
    clock.set(BILL_NOW)
    now_ms = int(BILL_NOW.timestamp() * 1000)
    day = 86_400_000

    def pack(name: str, remaining: str, expires_day: int, status: str = "online") -> ResourcePack:
        return ResourcePack(
            resource_pack_name=name,
            resource_pack_id=f"id-{name[:20]}",
            resource_pack_type="decreasing_total",
            total_quantity=Decimal(1000),
            remaining_quantity=Decimal(remaining),
            purchase_time=now_ms - 40 * day,
            effective_time=now_ms - 30 * day,
            invalid_time=now_ms + expires_day * day,
            status=status,
        )

    packs = [
        pack("video B", "100", 8),
        pack("video A", "50", 3),
        pack("image old", "7", -2, status="expired"),
    ]
    if hostile:
        packs.append(pack(HOSTILE_PACK, "30", 5))
    weekly = {"video": Decimal(70)}
    statuses = project(packs, now=BILL_NOW, weekly_burn=weekly, catalog=load_catalog("kling-api"))
    snapshot = PackSnapshot(
        taken_at=BILL_NOW - timedelta(hours=1),
        window_start=BILL_NOW - timedelta(days=400),
        window_end=BILL_NOW + timedelta(days=1),
        packs=tuple(statuses),
        burn_per_day={"video": Decimal("10.000"), "image": Decimal("0.000"), "tryon": Decimal("0.000")},
    )
    BillStore(ledger).set(SNAPSHOT_KEY, snapshot.to_dict())
    ledger.runs.record(
        "reconcile",
        since=BILL_NOW - timedelta(days=7),
        until=BILL_NOW,
        status="differences",
        summary={
            "source": "billing",
            "complete": True,
            "tolerance": "0.001",
            "counts": {
                "matched": 4,
                "amount_differs": 1,
                "unknown_to_ledger": 1,
                "not_billed": 1,
                "other_unit": 0,
            },
            "by_pack": {"video": {"ledger": "90.000", "kling": "120.000"}},
            "problems": [],
            "note": None,
            "clean": False,
        },
        differences=[
            BillDifference(
                "unknown_to_ledger",
                task_id="task-bypass",
                unit="units",
                pack_type="video",
                kling_amount=Decimal(35),
                day="2026-06-14",
                api_key_name=HOSTILE_PACK if hostile else "intern-laptop",
                model="kling-v2-6",
            ),
            BillDifference(
                "amount_differs",
                task_id="task-4",
                unit="units",
                pack_type="video",
                ledger_amount=Decimal(15),
                kling_amount=Decimal(20),
                day="2026-06-15",
            ),
            BillDifference(
                "not_billed", task_id="task-7", unit="units", pack_type="video", ledger_amount=Decimal(15)
            ),
        ],
    )
