"""The twins have the same face: the async and sync Kling clients, and the async and sync
guards, offer the same public methods with the same parameters (async vs sync aside); the
async guard's view of the ledger runs every ledger call in a worker thread."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anyio
import pytest

from kling_cost.guard import AsyncCostAwareClient, AsyncLedgerView, CostAwareClient
from kling_cost.kling import AsyncKlingClient, KlingClient
from kling_cost.ledger import Ledger, open_ledger

TWINS = [
    pytest.param(AsyncKlingClient, KlingClient, id="kling"),
    pytest.param(AsyncCostAwareClient, CostAwareClient, id="guard"),
]
SYNC_NAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def face(cls: type) -> dict[str, inspect.Signature]:
    """Public methods (and the context-manager protocol) by their sync name."""
    methods = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_") and name not in (*SYNC_NAMES, "__init__", "__enter__", "__exit__"):
            continue
        methods[SYNC_NAMES.get(name, name)] = inspect.signature(member)
    return methods


def described(sig: inspect.Signature) -> list[tuple[str, Any, Any, str]]:
    """Name, kind, default and annotation of each parameter, ``Async`` names read as sync."""
    return [
        (p.name, p.kind, p.default, re.sub(r"\bAsync(?=[A-Z])", "", str(p.annotation)))
        for p in sig.parameters.values()
    ]


def own(cls: type) -> set[str]:
    """Public methods a class defines itself (not those of a shared base such as ``ClientCore``)."""
    return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}


@pytest.mark.parametrize(("async_cls", "sync_cls"), TWINS)
def test_the_twins_have_the_same_methods_and_parameters(async_cls: type, sync_cls: type) -> None:
    async_face, sync_face = face(async_cls), face(sync_cls)
    assert sorted(async_face) == sorted(sync_face)
    for name, sig in sync_face.items():
        assert described(async_face[name]) == described(sig), name
        assert str(async_face[name].return_annotation).replace("Async", "") == str(
            sig.return_annotation
        ).replace("Async", ""), name


@pytest.mark.parametrize(("async_cls", "sync_cls"), TWINS)
def test_every_method_of_the_async_twin_is_awaitable_and_none_of_the_sync_one(
    async_cls: type, sync_cls: type
) -> None:
    """Methods a twin defines itself (shared ones, e.g. ``ClientCore.prepare_create``, do no I/O).
    A cursor listing (``task_pages``) is a plain method returning an ``AsyncIterator`` in the
    async twin (its pages are awaited as they are iterated) and an ``Iterator`` in the sync one."""
    mine = own(async_cls) | {"__aenter__", "__aexit__"}
    assert {"create", "aclose", "task_pages"} <= mine
    for name in mine:
        method, twin = getattr(async_cls, name), getattr(sync_cls, SYNC_NAMES.get(name, name))
        assert not inspect.iscoroutinefunction(twin), name
        if name.endswith("_pages"):
            assert str(inspect.signature(method).return_annotation).startswith("AsyncIterator["), name
            assert str(inspect.signature(twin).return_annotation).startswith("Iterator["), name
            continue
        assert inspect.iscoroutinefunction(method), name


def test_each_guard_has_every_method_of_its_kling_client() -> None:
    """The guards' docstrings promise the methods of the Kling client: hold them to it."""
    assert own(KlingClient) <= own(CostAwareClient)
    assert own(AsyncKlingClient) <= own(AsyncCostAwareClient)
    assert own(CostAwareClient) - own(KlingClient) == {"settle_pending"}


def test_the_ledger_view_wraps_only_public_ledger_methods() -> None:
    wrapped = [n for n, m in inspect.getmembers(AsyncLedgerView) if inspect.iscoroutinefunction(m)]
    assert {"reserve", "commit", "release", "charge", "attach_task", "extend", "cache_claim"} <= set(wrapped)
    for name in wrapped:
        assert not name.startswith("_") and callable(getattr(Ledger, name)), name


def test_the_ledger_view_runs_each_call_in_a_worker_thread(ledger_url: str) -> None:
    """Same results and errors as the ledger; never on the event loop's thread."""
    from kling_cost import BudgetExceeded

    threads: list[int] = []

    def recording(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return method(*args, **kwargs)

        return call

    with open_ledger(ledger_url) as ledger:
        for name in ("set_budget", "reserve", "commit", "usage"):
            setattr(ledger, name, recording(getattr(ledger, name)))
        view = AsyncLedgerView(ledger)

        async def main() -> tuple[int, Decimal]:
            await view.set_budget("project:film", 10)
            held = await view.reserve(4, ["project:film"], idempotency_key="k1")
            await view.commit(held, 3)
            with pytest.raises(BudgetExceeded):
                await view.reserve(8, ["project:film"])
            return threading.get_ident(), (await view.usage("project:film")).used

        loop_thread, used = anyio.run(main)
    assert used == 3
    assert len(threads) == 5 and loop_thread not in threads
