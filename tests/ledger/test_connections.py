"""Threads come and go (an async guard's anyio workers retire when idle, each event loop has its
own); the connections they used must go with them, on every backend."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import anyio

from kling_cost.guard import AsyncLedgerView
from kling_cost.ledger import open_ledger


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_threads_and_event_loops_that_end_leave_no_connection_behind(ledger_url: str) -> None:
    with open_ledger(ledger_url) as ledger:
        ledger.set_budget("account", 1000)
        view = AsyncLedgerView(ledger)

        async def spend() -> None:
            await view.commit(await view.reserve(1), 1)

        def use() -> None:
            ledger.commit(ledger.reserve(1), 1)

        for _ in range(3):  # warm up: the pool (PostgreSQL), this thread's connection
            anyio.run(spend)
            use()
        before = open_files()
        for _ in range(15):
            anyio.run(spend)  # each run starts (and ends) its own worker threads
            asyncio.run(spend())
            worker = threading.Thread(target=use)
            worker.start()
            worker.join(10)
        # Before the fix each of these 45 threads left its SQLite connection (two files) open.
        # anyio's worker threads end after anyio.run returns (it does not join them): under a
        # loaded machine the last one may still be on its way out, so give it a moment.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            open_files() - before > 4 or getattr(ledger.backend, "connection_count", 1) != 1
        ):
            time.sleep(0.05)
        assert open_files() - before <= 4
        assert ledger.usage("account").used == 3 * 2 + 15 * 3
        if hasattr(ledger.backend, "connection_count"):
            assert ledger.backend.connection_count == 1  # this thread's
