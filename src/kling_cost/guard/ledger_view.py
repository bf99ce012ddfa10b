"""The async guard's view of the ledger: each public ledger method, awaited in a worker thread.

A ledger call is a short, blocking database transaction; awaited through this view it runs in
anyio's worker threads (as :class:`~kling_cost.kling.AsyncKlingClient` sleeps with anyio), so
the event loop never waits on the database. One call, one thread hop: the view adds no
transaction of its own and wraps only the ledger's public methods, looked up by name on each
call, so it follows the ledger whatever its internals. A cancelled caller waits for the
transaction it started to finish (anyio's default), so a cancellation never leaves a
transaction half-known. A view made with ``shielded=True`` runs its calls even in a task
already cancelled (anyio's shield): for clean-up after a failure or a cancellation, which
must reach the ledger (the guard's single-flight bookkeeping).

The sync guard needs no view: it calls the ledger itself (``scripts/unasync.py`` turns
``AsyncLedgerView(ledger)`` into ``ledger``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from ..ledger import Ledger

__all__ = ["AsyncLedgerView"]

P = ParamSpec("P")
T = TypeVar("T")


def _in_thread(
    method: Callable[Concatenate[Ledger, P], T],
) -> Callable[Concatenate[AsyncLedgerView, P], Coroutine[Any, Any, T]]:
    """An async method of the view calling ``method`` on its ledger in a worker thread
    (same parameters, same result, same errors)."""
    name = method.__name__

    async def call(view: AsyncLedgerView, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound: Callable[P, T] = getattr(view.ledger, name)
        with anyio.CancelScope(shield=view.shielded):
            result = await anyio.to_thread.run_sync(functools.partial(bound, *args, **kwargs))
        return result

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``Ledger.{name}`` in a worker thread, awaited."
    return call


class AsyncLedgerView:
    """``await view.reserve(...)`` is ``ledger.reserve(...)`` run in a worker thread."""

    def __init__(self, ledger: Ledger, *, shielded: bool = False) -> None:
        self.ledger = ledger
        self.shielded = shielded

    def clock(self) -> datetime:
        """The ledger's clock (no I/O: called directly)."""
        return self.ledger.clock()

    # money operations
    reserve = _in_thread(Ledger.reserve)
    commit = _in_thread(Ledger.commit)
    release = _in_thread(Ledger.release)
    charge = _in_thread(Ledger.charge)
    attach_task = _in_thread(Ledger.attach_task)
    extend = _in_thread(Ledger.extend)
    sweep = _in_thread(Ledger.sweep)
    record_cache_hit = _in_thread(Ledger.record_cache_hit)
    # budgets and reads
    set_budget = _in_thread(Ledger.set_budget)
    get_budget = _in_thread(Ledger.get_budget)
    budgets = _in_thread(Ledger.budgets)
    usage = _in_thread(Ledger.usage)
    usages = _in_thread(Ledger.usages)
    charges = _in_thread(Ledger.charges)
    get_reservation = _in_thread(Ledger.get_reservation)
    reservation_for_task = _in_thread(Ledger.reservation_for_task)
    reservations = _in_thread(Ledger.reservations)
    # the request cache (dedup and single-flight)
    cache_lookup = _in_thread(Ledger.cache_lookup)
    cache_claim = _in_thread(Ledger.cache_claim)
    cache_attach = _in_thread(Ledger.cache_attach)
    cache_abandon = _in_thread(Ledger.cache_abandon)
    cache_adopt = _in_thread(Ledger.cache_adopt)
    cache_forget = _in_thread(Ledger.cache_forget)
    cache_complete = _in_thread(Ledger.cache_complete)
    cache_drop = _in_thread(Ledger.cache_drop)
