"""Closing a ledger while another thread is inside one of its transactions (the CLI closes its
ledger when a signal cuts a slow alert pass that is still writing): the transaction finishes
and is committed, the interpreter does not crash, and the ledger refuses new work."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from kling_cost import LedgerClosed
from kling_cost.ledger import open_ledger


def test_close_while_another_thread_is_in_a_transaction(ledger_url: str) -> None:
    led = open_ledger(ledger_url)
    led.set_budget("account", 100)
    inside, closed = threading.Event(), threading.Event()
    outcome: list[object] = []

    def writer() -> None:
        try:
            with led.transaction() as cur:
                cur.execute("SELECT COUNT(*) FROM budgets")
                cur.fetchone()
                inside.set()
                closed.wait(10)
                cur.execute("SELECT COUNT(*) FROM budgets")  # after close() returned
                outcome.append(cur.fetchone()[0])
        except BaseException as exc:  # recorded, asserted below
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(10)
    closer = threading.Thread(target=led.close)
    closer.start()
    closer.join(20)  # close() returns while the transaction is still open ...
    assert not closer.is_alive()
    closed.set()  # ... and only then does the transaction go on
    thread.join(20)
    assert not thread.is_alive()
    assert outcome == [1], outcome
    with pytest.raises(LedgerClosed):
        led.reserve(Decimal(1))
    if hasattr(led.backend, "connection_count"):
        assert led.backend.connection_count == 0  # the busy connection was closed at its end
    with open_ledger(ledger_url) as again:  # what was committed before is all there
        assert [b.scope for b in again.budgets()] == ["account"]
