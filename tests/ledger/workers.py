"""Functions run in child processes by the concurrency tests (importable under spawn)."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from decimal import Decimal

from kling_cost import BudgetExceeded
from kling_cost.ledger import open_ledger

SCOPE_SETS = [["project:a"], ["project:a", "key:k1"], ["project:b", "key:k1"], ["key:k2"], []]


def hammer(url: str, seed: int, threads: int, results: list[dict[str, str]] | None = None) -> dict[str, str]:
    """Reserve random amounts on overlapping scopes until refused 15 times in a row; commit
    most (for at most the reserved amount), release some. Returns committed sums per scope."""
    ledger = open_ledger(url)
    committed: dict[str, Decimal] = {}
    lock = threading.Lock()

    def run(thread_seed: int) -> None:
        rng = random.Random(thread_seed)
        refusals = 0
        while refusals < 15:
            scopes = rng.choice(SCOPE_SETS)
            amount = Decimal(rng.randint(1, 9000)) / 1000
            try:
                r = ledger.reserve(amount, scopes, ttl=timedelta(minutes=10))
            except BudgetExceeded:
                refusals += 1
                continue
            refusals = 0
            if rng.random() < 0.15:
                ledger.release(r)
                continue
            actual = amount - Decimal(rng.randint(0, int(amount * 1000))) / 1000 * (rng.random() < 0.3)
            done = ledger.commit(r, actual)
            with lock:
                for scope in done.scopes:
                    committed[scope] = committed.get(scope, Decimal(0)) + (done.actual or 0)

    workers = [threading.Thread(target=run, args=(seed * 100 + i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ledger.close()
    return {k: str(v) for k, v in committed.items()}


def reserve_and_hang(url: str, ready: str) -> None:
    """Reserve, announce the reservation id in file ``ready``, then hang until killed."""
    ledger = open_ledger(url)
    r = ledger.reserve(40, ["project:crash"], ttl=timedelta(seconds=60))
    with open(ready, "w") as fh:
        fh.write(r.id)
    time.sleep(600)


def write_in_a_loop(url: str, rounds: int, hold_s: float, stamps: str) -> None:
    """``rounds`` write transactions back to back, each held ``hold_s`` seconds; writes the
    ``time.monotonic()`` of each commit to file ``stamps`` (the first line: ready)."""
    ledger = open_ledger(url)
    done: list[float] = []
    with open(stamps, "w") as fh:
        fh.write("ready\n")
    for _ in range(rounds):
        with ledger.transaction() as cur:
            cur.execute("UPDATE budgets SET updated_at = updated_at")
            time.sleep(hold_s)
        done.append(time.monotonic())
    ledger.close()
    with open(stamps, "a") as fh:
        fh.write("".join(f"{t!r}\n" for t in done))


def hold_one_write(url: str, seconds: float, ready: str) -> None:
    """Hold one write transaction for ``seconds`` (file ``ready`` says it is held)."""
    ledger = open_ledger(url)
    with ledger.transaction() as cur:
        cur.execute("UPDATE budgets SET updated_at = updated_at")
        with open(ready, "w") as fh:
            fh.write("held\n")
        time.sleep(seconds)
    ledger.close()


def long_writes(url: str, seconds: float, pages: int, hold: float) -> None:
    """Write transactions that each hold the write lock ``hold`` seconds (a 2 KB row each),
    in a loop, with a checkpointer that restarts the WAL past ``pages`` pages."""
    import os

    from kling_cost.ledger.sqlite import SQLiteBackend

    SQLiteBackend.checkpoint_pages = pages
    ledger = open_ledger(url)
    blob = os.urandom(2000)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with ledger.transaction() as cur:
            cur.execute("INSERT INTO junk VALUES (?)", (blob,))
            time.sleep(hold)
    ledger.close()
