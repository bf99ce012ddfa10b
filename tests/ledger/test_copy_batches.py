"""``copy_ledger`` reads every table a page at a time, in the order of its primary key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from kling_cost import ConfigurationError
from kling_cost.ledger import Ledger, copy_ledger, open_ledger
from kling_cost.ledger.bill_store import BillStore
from kling_cost.ledger.runs_store import BillDifference
from kling_cost.ledger.schema import KEYS, TABLES
from tests.helpers import FakeClock, fresh_postgres_url, need_postgres


def test_keys_are_the_primary_keys(ledger: Ledger) -> None:
    """A keyset page is only exact on a unique key: each table's is its primary key."""
    with ledger.transaction() as cur:
        for table, _columns, _identity in TABLES:
            if ledger.backend.dialect == "sqlite":
                cur.execute(f"SELECT name, pk FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk")
            else:
                cur.execute(
                    "SELECT a.attname, k.n FROM pg_index i CROSS JOIN LATERAL "
                    "unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
                    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                    "WHERE i.indrelid = CAST(? AS regclass) AND i.indisprimary ORDER BY k.n",
                    (table,),
                )
            assert tuple(str(row[0]) for row in cur.fetchall()) == KEYS[table], table
    assert set(KEYS) == {table for table, _, _ in TABLES}


def _fill(led: Ledger, clock: FakeClock) -> None:
    """A few rows more than a page (3) in every table, composite keys included."""
    led.set_budget("account", 1000, "month")
    for i in range(4):
        led.set_budget(f"project:p{i}", 100, "day", thresholds=["0.01", "0.02", "0.05", "0.1"])
    led.delete_budget("project:p3", "day")  # an id that must never come back
    for i in range(11):
        if i == 7:  # rollup rows of the first, the rest noted for a fold (PostgreSQL)
            led.rollup.fold()
        scopes = [f"project:p{i % 3}"]
        r = led.reserve(Decimal(i + 1), scopes, metadata={"model": f"kling-v{i % 3}", "mode": "std"})
        if i % 3 == 2:
            led.release(led.attach_task(r, f"t-{i}"))
        else:
            led.commit(r, Decimal(i + 1), task_id=f"t-{i}")
        clock.advance(hours=7)  # other hours and days: more rollup rows
    led.reserve(2, ["project:p0"], idempotency_key="still-held")
    for i in range(5):
        claimed, _ = led.cache_claim(f"fp-{i}", "text2video", Decimal(1), timedelta(minutes=5))
        assert claimed
        if i % 2:
            led.cache_complete(f"fp-{i}", {"task_id": f"c-{i}"}, timedelta(hours=1))
    for i in range(4):  # the proxy's tables: keys, the tasks they own, callbacks to relay
        key = led.proxy.add_key(
            name=f"k{i}",
            access_key=f"ak-{i}",
            api_key_hash=f"hash-{i}",
            salt=f"salt-{i}",
            scopes=[f"project:p{i % 3}"],
            unit="units",
            max_per_request=Decimal("2.5") if i % 2 else None,
            models=["kling-v2-6"] if i % 2 else None,
            concurrency=i + 1,
            callback_hosts=["hooks.internal"] if i == 1 else [],
            expires_in=timedelta(days=30) if i == 2 else None,
        )
        assert led.proxy.claim_task(key, f"ext-{i}", "/v1/videos/text2video", f"https://93.184.216.34/{i}")
        led.proxy.attach(f"ext-{i}", f"pt-{i}")
        assert led.relays.enqueue(key.id, f"pt-{i}", "succeed", f"https://93.184.216.34/{i}", f'{{"n": {i}}}')
    [claimed] = led.relays.claim_due(1, timedelta(minutes=2))
    assert led.relays.delivered(claimed)
    bill = BillStore(led)  # the bill's state: named JSON values
    for i in range(4):
        bill.set(f"copy-test-{i}", {"n": i, "units": f"{i}.5"})
    with led.transaction() as cur:  # the rollup's bookkeeping table (one row in real ledgers)
        for i in range(4):
            cur.execute("INSERT INTO report_rollup_meta (name, value) VALUES (?, ?)", (f"copy-test-{i}", i))
    for i in range(4):  # the bill: reconciliation runs and their differences
        led.runs.record(
            "reconcile",
            since=clock() - timedelta(days=7),
            until=clock(),
            status="differences" if i % 2 else "clean",
            summary={"run": i},
            differences=[
                BillDifference("unknown_to_ledger", f"k-{i}-{n}", "units", "video", None, Decimal("1.5"))
                for n in range(2)
            ],
        )


def _handed_over(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """What a copy of ``tables`` holds: the charges that wait for a fold of SQLite's rollup
    (marked, above the watermark) as ``rollup_pending`` rows, the watermark past every charge."""
    out = dict(tables)
    meta = dict(out["report_rollup_meta"])
    mark = meta.get("folded_upto", 0)
    waiting = [(row[0],) for row in out["charges"] if row[-1] == 1 and row[0] > mark]
    assert not set(waiting) & set(out["rollup_pending"])
    out["rollup_pending"] = sorted([*out["rollup_pending"], *waiting], key=repr)
    if out["charges"]:
        meta["folded_upto"] = max(row[0] for row in out["charges"])
    out["report_rollup_meta"] = sorted(meta.items(), key=repr)
    return out


def _tables(led: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with led.transaction() as cur:
        for table, columns, _identity in TABLES:
            cur.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(KEYS[table])}")
            out[table] = sorted((tuple(row) for row in cur.fetchall()), key=repr)  # collations differ
    return out


class _Pages:
    """Notes how many rows each read of the source returned."""

    def __init__(self, cur: Any, sizes: list[int]) -> None:
        self._cur, self._sizes = cur, sizes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self._cur.fetchall()
        self._sizes.append(len(rows))
        return rows


def test_a_copy_in_pages_moves_every_row_both_ways(
    ledger_url: str, clock: FakeClock, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source on one backend, target on the other: SQLite -> PostgreSQL and back."""
    need_postgres()
    other = fresh_postgres_url() if ledger_url.startswith("sqlite") else f"sqlite:///{tmp_path / 'target.db'}"
    # fold_interval=None: PostgreSQL's charges stay noted for a fold (rollup_pending) until read
    with (
        open_ledger(ledger_url, clock=clock, fold_interval=None) as source,
        open_ledger(other, clock=clock) as target,
    ):
        try:
            _fill(source, clock)
            expected = _tables(source)
            filled = {t: len(r) for t, r in expected.items()}
            if not source.backend.defers_rollup:  # SQLite adds each charge to the rollup at once
                assert filled.pop("rollup_pending") == 0
            assert all(n > 3 for n in filled.values()), filled
            sizes: list[int] = []
            real = source.backend.transaction

            @contextmanager
            def paged(**options: Any) -> Iterator[Any]:
                with real(**options) as cur:
                    yield _Pages(cur, sizes)

            monkeypatch.setattr(source.backend, "transaction", paged)
            result = copy_ledger(source, target, batch=3)
            monkeypatch.undo()
            assert max(sizes) == 3 and len(sizes) > 2 * len(TABLES)  # every table took several pages
            assert result.rows == {table: len(rows) for table, rows in expected.items()}
            assert _tables(target) == _handed_over(expected)
            if ledger_url.startswith("sqlite"):  # charges were waiting for a fold, and were handed over
                assert _handed_over(expected)["rollup_pending"] != expected["rollup_pending"]
            source.rollup.fold()
            target.rollup.fold()
            assert _tables(target)["report_rollup"] == _tables(source)["report_rollup"]  # each charge once
            # The copy goes on as the source would: ids continue, holds settle, budgets hold.
            assert target.set_budget("project:p9", 5).id > max(row[0] for row in expected["budgets"])
            held = target.get_reservation("still-held")
            assert held is not None and target.commit(held, 2).status == "committed"
            assert target.usage("project:p0").used == source.usage("project:p0").used + 2
        finally:
            if other.startswith("postgresql"):
                target.backend.drop_schema()  # type: ignore[attr-defined]


class _WritesBetweenPages:
    """A source cursor that lets ``write`` (another connection, another thread) commit a change
    after each page it reads: the source's writers go on while it is being copied."""

    def __init__(self, cur: Any, write: Any, done: list[bool]) -> None:
        self._cur = cur
        self._write = write
        self._done = done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self._cur.fetchall()
        writer = threading.Thread(target=lambda: self._done.append(self._write()))
        writer.start()
        writer.join(10)
        return rows


def test_a_copy_is_one_moment_of_a_source_that_writers_keep_changing(
    ledger_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reservation and a commit land between every two pages the copy reads. The copy is the
    source as of one moment (counters that agree with its reservations and charges), and the
    writers never wait for it. Before: PostgreSQL read each page at its own moment (windows
    copied before charges that counted in them), SQLite blocked every writer until the end."""
    need_postgres()
    other = fresh_postgres_url() if ledger_url.startswith("sqlite") else f"sqlite:///{tmp_path / 'target.db'}"
    writer_url = ledger_url + "?timeout=3" if ledger_url.startswith("sqlite") else ledger_url
    with open_ledger(ledger_url) as source, open_ledger(other) as target, open_ledger(writer_url) as writer:
        try:
            source.set_budget("project:a", 10_000, window="lifetime")
            for i in range(40):
                held = source.reserve(1, ["project:a"], metadata={"prompt": f"shot {i}"})
                if i % 4:
                    source.commit(held, 1, task_id=f"t{i}")
            before = (len(source.charges()), len(source.reservations(limit=None)))

            def write() -> bool:
                writer.commit(writer.reserve(2, ["project:a"]), 2)
                writer.reserve(3, ["project:a"])
                return True

            done: list[bool] = []
            real = source.backend.transaction

            @contextmanager
            def interleaved(**options: Any) -> Iterator[Any]:
                with real(**options) as cur:
                    yield _WritesBetweenPages(cur, write, done)

            monkeypatch.setattr(source.backend, "transaction", interleaved)
            copy_ledger(source, target, batch=4)
            monkeypatch.undo()
            assert len(done) > 20 and all(done)  # every write went through during the copy
            assert (len(target.charges()), len(target.reservations(limit=None))) == before
            for led in (source, target):
                usage = led.usage("project:a", "lifetime")
                assert usage.used == sum(c.actual for c in led.charges("project:a"))
                assert usage.reserved == sum(r.amount for r in led.reservations("reserved", limit=None))
        finally:
            if other.startswith("postgresql"):
                target.backend.drop_schema()  # type: ignore[attr-defined]


def test_a_batch_is_a_whole_number_of_rows(ledger: Ledger, tmp_path: Any) -> None:
    with open_ledger(f"sqlite:///{tmp_path / 'other.db'}") as target:
        for bad in (0, -1, True, "500"):
            with pytest.raises(ConfigurationError, match="batch"):
                copy_ledger(ledger, target, batch=bad)  # type: ignore[arg-type]
