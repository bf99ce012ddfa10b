"""The ledger's layout: composed parts that share one public seam, never each other's privates."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import kling_cost
import kling_cost.ledger
from kling_cost import StorageError, money
from kling_cost.ledger import Ledger, open_ledger

SRC = Path(kling_cost.__file__).parent
LEDGER = Path(kling_cost.ledger.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _ledger_privates() -> set[str]:
    """Every private name the ledger's modules define: module-level names, methods and
    attributes of their classes (``def _x``, ``_x = ...``, ``self._x = ...``)."""
    names: set[str] = set()
    for path in LEDGER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if _private(n)}


def violations(source: str, *, in_ledger: bool, privates: set[str]) -> list[str]:
    """Where ``source`` reaches into the ledger's privates from another module.

    * an attribute ``x._name`` on anything but ``self``/``cls``/``super()``: inside the ledger
      every such access (its modules share only public names), elsewhere any of ``privates``;
    * an import of a private module of :mod:`kling_cost.ledger` from outside it, or of a private
      name from a ledger module (inside the ledger, from any module);
    * the same reach by name: ``getattr``/``setattr``/``hasattr``/``delattr`` with a private
      name as a string, ``vars(x)[...]``, ``x.__dict__[...]``.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        named = _reached_by_name(node)
        if named is not None:
            owner, name = named
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) and (
                in_ledger or name in privates
            ):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            if in_ledger or node.attr in privates:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            parts = module.split(".")
            ledger_module = (in_ledger and node.level == 1) or "ledger" in parts
            if not ledger_module:
                continue
            after = parts[parts.index("ledger") + 1 :] if "ledger" in parts else parts
            names = [alias.name for alias in node.names]
            if any(_private(p) for p in after) or any(_private(n) for n in names):
                found.append(f"line {node.lineno}: from {'.' * node.level}{module} import {', '.join(names)}")
    return found


def _reached_by_name(node: ast.AST) -> tuple[ast.expr, str] | None:
    """(owner, private name) of ``getattr(owner, "_x")`` and its kin, ``vars(owner)["_x"]``
    and ``owner.__dict__["_x"]``; None for anything else."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and _private(node.args[1].value)
    ):
        return node.args[0], node.args[1].value
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
        and _private(node.slice.value)
    ):
        holder = node.value
        if isinstance(holder, ast.Call) and isinstance(holder.func, ast.Name) and holder.func.id == "vars":
            return (holder.args[0] if holder.args else holder), node.slice.value
        if isinstance(holder, ast.Attribute) and holder.attr == "__dict__":
            return holder.value, node.slice.value
    return None


def test_the_check_finds_what_it_looks_for() -> None:
    privates = {"_transaction", "_hold"}
    assert violations("ledger._transaction()", in_ledger=False, privates=privates)
    assert violations("from ..ledger._rows import to_ms", in_ledger=False, privates=privates)
    assert violations("from kling_cost.ledger.holds import _scopes", in_ledger=False, privates=privates)
    assert violations("self.ledger._scopes_contain('x', 'y')", in_ledger=True, privates=privates)
    assert violations("from ._rows import Cursor", in_ledger=True, privates=privates)
    assert not violations("self._transaction()\nsuper()._x()", in_ledger=True, privates=privates)
    for by_name in (
        "getattr(ledger, '_transaction')()",
        "setattr(ledger, '_hold', None)",
        "vars(ledger)['_transaction']",
        "ledger.__dict__['_hold']",
    ):
        assert violations(by_name, in_ledger=False, privates=privates), by_name
    assert not violations("getattr(param, '_runtime_param', False)", in_ledger=False, privates=privates)
    assert not violations("getattr(self, '_hold')", in_ledger=True, privates=privates)
    assert not violations(
        "ledger.transaction()\nfrom ..kling._core import x", in_ledger=False, privates=privates
    )


def test_no_module_reaches_into_the_ledgers_privates() -> None:
    privates = _ledger_privates()
    assert {"_hooks", "_settle", "_holds", "_conn"} <= privates  # the collection itself works
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        in_ledger = path.parent == LEDGER
        bad = violations(path.read_text(), in_ledger=in_ledger, privates=privates)
        if bad:
            found[str(path.relative_to(SRC))] = bad
    assert found == {}


def test_ledger_modules_stay_short_and_the_package_docstring_names_each() -> None:
    doc = kling_cost.ledger.__doc__ or ""
    for path in sorted(LEDGER.glob("*.py")):
        assert len(path.read_text().splitlines()) <= 500, path.name
        if path.name != "__init__.py":
            assert f"``{path.name}``" in doc, f"the layout in ledger/__init__.py does not name {path.name}"


def test_storage_integers_are_not_public() -> None:
    for name in ("to_storage", "from_storage"):
        assert name not in kling_cost.__all__ and name not in money.__all__
        assert not hasattr(kling_cost, name)


def test_the_transaction_seam_commits_or_rolls_back(ledger: Ledger) -> None:
    ledger.set_budget("account", 10)
    with ledger.transaction() as cur:
        cur.execute("UPDATE budgets SET limit_milli = ? WHERE scope = ?", (20_000, "account"))
    assert ledger.usage("account").limit == 20
    with pytest.raises(RuntimeError), ledger.transaction() as cur:
        cur.execute("UPDATE budgets SET limit_milli = ? WHERE scope = ?", (30_000, "account"))
        raise RuntimeError("rolled back")
    assert ledger.usage("account").limit == 20
    with ledger.transaction() as cur:
        assert cur.now == ledger.clock()  # the time the transaction decides by (injected here)


def test_the_stores_share_the_ledgers_seam(ledger: Ledger) -> None:
    for store in (ledger.cache, ledger.outbox, ledger.rollup, ledger.queries):
        assert store.ledger is ledger
    assert ledger.hooks == [ledger.outbox.writer, ledger.rollup.writer]
    ledger.set_budget("project:a", 10)
    ledger.commit(ledger.reserve(4, ["project:a"]), 3)
    assert ledger.charges() == ledger.queries.charges()
    assert [c.actual for c in ledger.queries.recent_charges(limit=5)] == [3]


@pytest.mark.timeout(30, method="thread")  # before the fix, PostgreSQL waited forever
def test_the_seam_refuses_to_nest_in_one_thread_on_every_backend(ledger: Ledger) -> None:
    """A ledger method inside ``ledger.transaction()`` (or called by a hook) would open a second
    transaction: SQLite failed with a driver message, PostgreSQL took a second connection and
    waited for the outer transaction's lock forever. Both now refuse at once, clearly, and the
    outer transaction rolls back."""
    ledger.set_budget("account", 10)
    with pytest.raises(StorageError, match="do not nest"), ledger.transaction() as cur:
        cur.execute("UPDATE budgets SET limit_milli = ? WHERE scope = ?", (20_000, "account"))
        ledger.set_budget("account", 30)
    assert ledger.usage("account").limit == 10

    class CallsTheLedger:
        def after_reserve(self, cur: Any, now: Any, reservation: Any, states: Any) -> None:
            ledger.usage("account")

        def after_settle(self, *args: Any) -> None: ...
        def after_budget_set(self, *args: Any) -> None: ...
        def after_refusal(self, *args: Any) -> None: ...

    ledger.hooks.append(CallsTheLedger())
    with pytest.raises(StorageError, match="a hook must not call the ledger's methods"):
        ledger.reserve(1)
    ledger.hooks.pop()
    assert ledger.usage("account").reserved == 0  # nothing held by the refused reservation
    ledger.commit(ledger.reserve(1), 1)  # the thread's seam is usable again
    assert ledger.usage("account").used == 1


def test_a_transaction_abandoned_in_a_generator_rolls_back_and_frees_the_seam(ledger: Ledger) -> None:
    ledger.set_budget("account", 10)

    def steps() -> Iterator[None]:
        with ledger.transaction() as cur:
            cur.execute("UPDATE budgets SET limit_milli = ? WHERE scope = ?", (20_000, "account"))
            yield

    walk = steps()
    next(walk)
    with pytest.raises(StorageError, match="do not nest"):
        ledger.usage("account")  # the generator still holds its transaction open
    walk.close()  # abandoned mid-way: rolled back
    assert ledger.usage("account").limit == 10


def test_other_threads_and_ledgers_are_not_nesting(ledger: Ledger, tmp_path: Path) -> None:
    ledger.set_budget("account", 10)
    seen: list[Decimal] = []
    with open_ledger(f"sqlite:///{tmp_path / 'other.db'}") as other, ledger.transaction():
        other.set_budget("account", 5)  # another ledger: its own transaction
        worker = threading.Thread(target=lambda: seen.append(other.usage("account").limit))
        worker.start()
        worker.join(10)
    assert seen == [5]
