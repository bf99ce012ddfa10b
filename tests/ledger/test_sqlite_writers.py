"""Writers of every process take turns on a SQLite ledger (``ledger/sqlite_queue.py``), a writer
gives up after the ledger's ``timeout`` and the line moves on, reads never wait for a writer
(on both backends), and a long read does not stall writers through the WAL checkpointer."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from kling_cost.errors import StorageError
from kling_cost.ledger import open_ledger
from kling_cost.ledger.sqlite import SQLiteBackend
from kling_cost.reports import glance, overview, report
from tests.ledger.workers import hold_one_write, long_writes, write_in_a_loop

pytestmark = pytest.mark.slow

SPAWN = multiprocessing.get_context("spawn")


def _wait_for(path: Path, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().startswith(what)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the child process never wrote {what!r} to {path}")
        time.sleep(0.01)


@pytest.mark.sqlite
def test_a_writer_of_another_process_gets_its_turn(sqlite_url: str, tmp_path: Path) -> None:
    # Another process writes in a loop, each transaction 20 ms, taking SQLite's lock again
    # within microseconds of each commit. SQLite's busy handler sleeps up to 100 ms between
    # tries, so this process waited for the whole loop (seconds, with longer loops); in line,
    # it goes next.
    stamps = tmp_path / "stamps"
    child = SPAWN.Process(target=write_in_a_loop, args=(sqlite_url, 60, 0.02, str(stamps)))
    child.start()
    try:
        with open_ledger(sqlite_url) as ledger:
            ledger.commit(ledger.reserve(1, ["project:a"]), 1)  # connections and the line opened
            _wait_for(stamps, "ready")
            time.sleep(0.2)  # the loop is running
            started = time.monotonic()
            ledger.commit(ledger.reserve(1, ["project:a"]), 1)
            finished = time.monotonic()
        child.join(60)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    commits = [float(line) for line in stamps.read_text().split()[1:]]
    assert len(commits) == 60
    assert commits[0] < started < commits[-1], "the other process's loop was not running: nothing measured"
    between = [t for t in commits if started <= t <= finished]
    # reserve and commit: two turns. A flock is not strictly first come, first served (the
    # process that released it may take it back before the waiter runs), but the waiter is
    # woken at once: a few of the other's transactions at most, never the whole loop.
    assert len(between) <= 12, f"waited for {len(between)} of the other process's transactions"


@pytest.mark.sqlite
def test_a_writer_gives_up_after_the_timeout_and_the_line_moves_on(sqlite_url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = SPAWN.Process(target=hold_one_write, args=(sqlite_url, 2.5, str(ready)))
    holder.start()
    try:
        with open_ledger(sqlite_url + "?timeout=0.3") as ledger:
            _wait_for(ready, "held")
            started = time.monotonic()
            with pytest.raises(StorageError, match=r"no write lock within 0\.3 s.*\?timeout="):
                ledger.reserve(5, ["project:a"])
            assert time.monotonic() - started < 2.0  # gave up, did not wait for the holder
            holder.join(60)
            assert holder.exitcode == 0
            # the turn given up left the line when it came: this process writes again at once
            started = time.monotonic()
            reservation = ledger.reserve(5, ["project:a"])
            assert time.monotonic() - started < 1.0
            ledger.commit(reservation, 5)
            assert ledger.usage("project:a").used == Decimal(5)  # the refused one changed nothing
            assert len(ledger.reservations()) == 1
    finally:
        if holder.is_alive():
            holder.kill()
    # and another process is not held up by the helper thread that left the line
    with open_ledger(sqlite_url + "?timeout=1") as other:
        other.commit(other.reserve(1, ["project:a"]), 1)
        assert other.usage("project:a").used == Decimal(6)


@pytest.mark.sqlite
def test_without_a_usable_lock_file_writers_still_work(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    (tmp_path / "ledger.db-writers").mkdir()  # cannot be opened as the lock file
    with open_ledger(f"sqlite:///{db}") as ledger:
        ledger.set_budget("project:a", 10)
        done: list[Decimal] = []

        def spend() -> None:
            for _ in range(20):
                done.append(ledger.commit(ledger.reserve(Decimal("0.1"), ["project:a"])).actual or Decimal(0))

        threads = [threading.Thread(target=spend) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(done) == Decimal(6)
        assert ledger.usage("project:a").used == Decimal(6)


@pytest.mark.sqlite
def test_a_forked_child_is_refused_a_ledger_its_parent_had_open(sqlite_url: str, tmp_path: Path) -> None:
    # SQLite's locks do not survive a fork (its per-process lock state is copied): a child's
    # reservation could go to a WAL another process deletes. The child is told what to do
    # instead; a ledger closed before the fork, or another file, it may open and use.
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    with open_ledger(other_url) as other:
        other.set_budget("project:b", 10)
    ledger = open_ledger(sqlite_url)
    ledger.commit(ledger.reserve(1, ["project:a"]), 1)
    report = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # the child: report what happened, exit at once
        lines = []
        try:
            for attempt in (lambda: ledger.reserve(1, ["project:a"]), lambda: open_ledger(sqlite_url)):
                try:
                    attempt()
                    lines.append("allowed")
                except StorageError as exc:
                    lines.append(str(exc))
            with open_ledger(other_url) as fresh:  # a file the parent did not have open
                fresh.commit(fresh.reserve(1, ["project:b"]), 1)
                lines.append(f"other {fresh.usage('project:b').used == 1}")
        finally:
            report.write_text("\n".join(lines))
            os._exit(0)
    os.waitpid(pid, 0)
    refused_reserve, refused_open, other_line = report.read_text().split("\n")
    for refused in (refused_reserve, refused_open):
        assert "was open when this process was forked" in refused
        assert 'multiprocessing.get_context("spawn")' in refused
    assert other_line == "other True"
    assert ledger.usage("project:a").used == Decimal(1)  # the child changed nothing
    ledger.close()
    pid = os.fork()  # closed before this fork: the child may open it again
    if pid == 0:
        code = 1
        try:
            with open_ledger(sqlite_url) as fresh:
                fresh.commit(fresh.reserve(1, ["project:a"]), 1)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with open_ledger(sqlite_url) as check:
        assert check.usage("project:a").used == Decimal(2)


@pytest.mark.sqlite
def test_a_long_read_does_not_stall_writers_through_the_checkpointer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A RESTART checkpoint waits for readers of the old WAL while holding the write lock; it
    # used to wait as long as the read lasted (every reservation with it).
    monkeypatch.setattr(SQLiteBackend, "checkpoint_pages", 8)  # checkpoint all the time
    monkeypatch.setattr(SQLiteBackend, "checkpoint_poll", 0.005)
    monkeypatch.setattr(SQLiteBackend, "checkpoint_cap_pages", 10**9)  # (the cap: the attack tests)
    with open_ledger(sqlite_url) as ledger:
        for _ in range(20):
            ledger.commit(ledger.reserve(1, ["project:a"]), 1)
        reading = threading.Event()

        def long_read() -> None:
            with ledger.transaction(snapshot=True) as cur:
                cur.execute("SELECT COUNT(*) FROM charges")
                cur.fetchone()
                reading.set()
                time.sleep(1.5)

        reader = threading.Thread(target=long_read)
        reader.start()
        reading.wait(10)
        slowest = 0.0
        deadline = time.monotonic() + 1.2
        pairs = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            ledger.commit(ledger.reserve(Decimal("0.001"), ["project:a"]), Decimal("0.001"))
            slowest = max(slowest, time.monotonic() - started)
            pairs += 1
        reader.join(10)
        assert pairs > 50
        assert slowest < 0.5, f"a reservation waited {slowest:.2f} s for a checkpoint"


def _hold_a_write(ledger_url: str) -> Callable[[], None]:
    """Start holding a write transaction that changed a budget window (another connection);
    returns the function that rolls it back."""
    if ledger_url.startswith("sqlite:"):
        conn = sqlite3.connect(ledger_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE budget_windows SET used_milli = used_milli")

        def undo() -> None:
            conn.execute("ROLLBACK")
            conn.close()

        return undo
    ledger = open_ledger(ledger_url)
    schema = ledger.backend.schema  # type: ignore[attr-defined]
    ledger.close()
    pg = psycopg.connect(ledger_url.split("?", maxsplit=1)[0])
    pg.execute(f'SET search_path TO "{schema}"')
    pg.execute("UPDATE budget_windows SET used_milli = used_milli")
    pg.execute("LOCK TABLE budgets IN EXCLUSIVE MODE")  # blocks writers, never readers

    def rollback() -> None:
        pg.rollback()
        pg.close()

    return rollback


def test_reads_never_wait_for_a_writer(ledger_url: str) -> None:
    # Every read of the ledger runs in a read-only snapshot: on SQLite it took the write lock
    # (a report over a large ledger stalled every reservation of every process meanwhile, and
    # waited for them); on PostgreSQL a read-only transaction also proves none of them writes.
    # SQLite: a read that waited for the lock would fail after 0.5 s; PostgreSQL: it would be slow
    quick = ledger_url + "?timeout=0.5" if ledger_url.startswith("sqlite:") else ledger_url
    with open_ledger(ledger_url) as setup:
        setup.set_budget("project:a", 100, thresholds=["0.1"])
        done = setup.commit(setup.reserve(20, ["project:a"], metadata={"model": "kling-v2-6"}), 20)
        setup.attach_task(setup.reserve(1, ["project:a"]), "task-1")
    undo = _hold_a_write(ledger_url)
    try:
        with open_ledger(quick) as ledger:
            now = datetime.now(UTC)
            reads: list[Callable[[], object]] = [
                ledger.budgets,
                lambda: ledger.get_budget("project:a", "day"),
                lambda: ledger.usage("project:a"),
                ledger.usages,
                lambda: ledger.get_reservation(done.id),
                lambda: ledger.reservation_for_task("task-1"),
                ledger.reservations,
                ledger.charges,
                ledger.totals,
                ledger.queries.held,
                ledger.queries.charge_span,
                lambda: ledger.queries.recent_charges(limit=5),
                ledger.queries.prompt_costs,
                lambda: ledger.queries.charge_facts(since=None, until=None, scope=None),
                ledger.alerts,
                lambda: ledger.cache.lookup("f" * 64),
                ledger.runs.runs,
                ledger.relays.relays,
                lambda: report(ledger, "day", since=now - timedelta(days=2), until=now),
                lambda: report(ledger, "model", source="charges"),
                lambda: glance(ledger),
                lambda: overview(ledger),
            ]
            for read in reads:
                started = time.monotonic()
                read()
                assert time.monotonic() - started < 0.4, read
            assert ledger.usage("project:a").used == Decimal(20)
            assert ledger.totals()["units"]["charged"] == Decimal(20)
    finally:
        undo()


def test_a_turn_another_writer_waited_for_steps_aside_as_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a turn that had to wait in line (others wait too), the writer yields its CPU as it
    leaves, so the next writer's line thread, woken onto that CPU, runs at once instead of at
    the next scheduler tick; a turn nobody contended makes no such call."""
    from kling_cost.ledger.sqlite_queue import WriterQueue

    yields: list[int] = []
    monkeypatch.setattr(os, "sched_yield", lambda: yields.append(threading.get_ident()))
    db = tmp_path / "l.db"
    db.touch()
    first, second = WriterQueue(str(db)), WriterQueue(str(db))  # two processes' lines, as flock sees them
    try:
        assert first.acquire(5)
        first.release()
        assert yields == []  # uncontended
        assert first.acquire(5)
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(second.acquire(5)))
        waiter.start()
        time.sleep(0.2)
        assert got == []  # in line behind the first
        first.release()
        waiter.join(5)
        assert got == [True]
        assert yields == []  # the first never waited
        second.release()
        assert yields == [threading.get_ident()]  # the second did
        assert first.acquire(5)
        first.release()
        assert len(yields) == 1
    finally:
        first.close()
        second.close()


_LINE_CHILD = """
import sys, time
from kling_cost.ledger.sqlite_queue import WriterQueue
line = WriterQueue(sys.argv[1])
assert line.acquire(5)
print("held", flush=True)
sys.stdin.readline()  # the parent waits behind this turn now
line.release()
started = time.monotonic()
got = line.acquire(5)
print(got, round(time.monotonic() - started, 3), flush=True)
line.release()
line.close()
"""


def test_a_turn_ends_with_its_transaction_whatever_the_process_does_next(tmp_path: Path) -> None:
    """A writer that had to wait leaves the line as its transaction ends, on its own thread: a
    process busy afterwards in C code that holds the GIL (a big sort, a JSON dump) or stopped
    never keeps the other processes' writers out. (Keeping a turn between transactions, for a
    burst of them, made another process wait out that work and fail after its timeout.)"""
    import random
    import subprocess
    import sys

    from kling_cost.ledger.sqlite_queue import WriterQueue

    db = tmp_path / "l.db"
    db.touch()
    data = [random.random() for _ in range(3_000_000)]
    line = WriterQueue(str(db))
    child = subprocess.Popen(
        [sys.executable, "-c", _LINE_CHILD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        got: list[bool] = []
        busy: list[float] = []

        def write_then_work() -> None:
            got.append(line.acquire(5))  # a turn that had to wait; the child asks again at once
            line.release()  # the transaction ends
            started = time.monotonic()
            sorted(data)  # holds the GIL throughout: no other thread of this process runs
            busy.append(time.monotonic() - started)

        waiter = threading.Thread(target=write_then_work)
        waiter.start()
        time.sleep(0.2)
        assert got == []  # in line behind the child
        child.stdin.write("\n")
        child.stdin.flush()
        waiter.join(30)
        assert got == [True] and len(busy) == 1
        ok, waited = child.stdout.readline().split()
        assert ok == "True"
        assert busy[0] > 0.3  # long enough for the check below to mean something
        assert float(waited) < 0.1 + busy[0] / 2, (waited, busy)
        assert child.wait(10) == 0
    finally:
        line.close()
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


@pytest.mark.sqlite
def test_a_writer_leaves_the_line_as_its_transaction_begins_and_sqlite_keeps_the_next_out(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The next writer in line wakes while a transaction runs (the line is passed on once
    SQLite's write lock is held), yet cannot write until it commits: it asks for SQLite's lock
    again and again, gets it as soon as the holder commits, and gives up after its timeout
    with the same message as in line."""
    from kling_cost.ledger.sqlite_queue import WriterQueue

    ready = tmp_path / "ready"
    holder = SPAWN.Process(target=hold_one_write, args=(sqlite_url, 1.5, str(ready)))
    holder.start()
    line = WriterQueue(sqlite_url.removeprefix("sqlite:///"))
    try:
        _wait_for(ready, "held")
        started = time.monotonic()
        assert line.acquire(0.5)  # the head of the line is free while the transaction runs
        assert time.monotonic() - started < 0.2
        line.release()
        with (
            open_ledger(sqlite_url + "?timeout=0.3") as ledger,
            pytest.raises(StorageError, match=r"no write lock within 0\.3 s.*\?timeout="),
        ):
            ledger.reserve(5, ["project:a"])  # SQLite's lock still keeps it out
        with open_ledger(sqlite_url + "?timeout=10") as ledger:
            ledger.commit(ledger.reserve(5, ["project:a"]), 5)  # waits at the head, then writes
            elapsed = time.monotonic() - started
            assert 1.0 < elapsed < 5.0, elapsed
            assert ledger.usage("project:a").used == Decimal(5)
            assert len(ledger.reservations()) == 1  # the refused one changed nothing
        holder.join(60)
        assert holder.exitcode == 0
    finally:
        line.close()
        if holder.is_alive():
            holder.kill()


def test_a_turn_passed_on_still_steps_aside_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pass_on`` frees the head of the line at once (another process's waiter gets it while
    the turn goes on); the turn's end still yields the CPU after a contended wait, once."""
    from kling_cost.ledger.sqlite_queue import WriterQueue

    yields: list[int] = []
    monkeypatch.setattr(os, "sched_yield", lambda: yields.append(1))
    db = tmp_path / "l.db"
    db.touch()
    first, second = WriterQueue(str(db)), WriterQueue(str(db))
    try:
        assert second.acquire(5)
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(first.acquire(5)))
        waiter.start()
        time.sleep(0.1)
        assert got == []
        second.pass_on()
        waiter.join(5)
        assert got == [True]  # the waiter is at the head while the second's turn goes on
        first.pass_on()
        assert second.acquire(0.5)  # free again
        second.release()
        assert yields == []  # the second never waited
        first.release()
        assert yields == [1]  # the first did, and yields as its turn ends
        first.release()
        assert yields == [1]
    finally:
        first.close()
        second.close()


def test_begin_immediate_asks_at_once_then_sleeps_and_gives_up_at_its_deadline(tmp_path: Path) -> None:
    """Against a writer outside the line that keeps SQLite's lock: tries again at once for a
    moment, then with sleeps, and raises SQLite's busy error at the deadline, not before."""
    from kling_cost.ledger.sqlite_queue import WRITE_SPIN, begin_immediate, is_busy

    db = str(tmp_path / "l.db")
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as caught:
            begin_immediate(waiter, started + 0.2)
        waited = time.monotonic() - started
        assert is_busy(caught.value)
        assert 0.2 <= waited < 0.5, waited
        assert WRITE_SPIN < 0.2
        threading.Timer(0.05, holder.execute, args=("COMMIT",)).start()
        started = time.monotonic()
        begin_immediate(waiter, started + 5)  # gets it once the holder commits
        assert time.monotonic() - started < 1.0
        waiter.execute("ROLLBACK")
    finally:
        waiter.close()
        holder.close()


def _wal_state(path: Path) -> tuple[int, bytes]:
    """(frames of the current WAL, its salts): a restarted WAL is written over from its start
    with new salts, its file not shortened."""
    try:
        data = Path(f"{path}-wal").read_bytes()
    except OSError:
        return 0, b""
    if len(data) < 32:
        return 0, b""
    page_size = int.from_bytes(data[8:12], "big")
    salts, frames, at = data[16:24], 0, 32
    while at + 24 <= len(data) and data[at + 8 : at + 16] == salts:
        frames, at = frames + 1, at + 24 + page_size
    return frames, salts


@pytest.mark.sqlite
def test_the_wal_still_restarts_behind_long_transactions_of_other_processes(tmp_path: Path) -> None:
    """A writer leaves the line as its transaction begins, so the checkpointer can get the line
    while that transaction still runs: it waits for it to end before its RESTART (which would
    otherwise wait 1 ms and give up). Two processes writing 5 ms transactions in a loop: the
    WAL keeps restarting near its mark (it grew to 14 times the mark without that wait)."""
    path = tmp_path / "l.db"
    url = f"sqlite:///{path}"
    with open_ledger(url) as ledger, ledger.transaction() as cur:
        cur.execute("CREATE TABLE junk (b BLOB)")
    procs = [SPAWN.Process(target=long_writes, args=(url, 4.0, 300, 0.005)) for _ in range(2)]
    for proc in procs:
        proc.start()
    most, salts = 0, set()
    try:
        while any(proc.is_alive() for proc in procs):
            frames, salt = _wal_state(path)
            most = max(most, frames)
            salts.add(salt)
            time.sleep(0.01)
    finally:
        for proc in procs:
            proc.join(60)
    assert all(proc.exitcode == 0 for proc in procs)
    assert len(salts) >= 4, salts  # it restarted again and again
    assert most < 900, most  # near the mark of 300 (each 2 KB row takes 2 pages)


def _not_locked_out(sqlite_url: str) -> None:
    """Another connection gets SQLite's write lock within half a second."""
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0.5, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.mark.sqlite
@pytest.mark.parametrize("where", ["lean", "general"])
def test_an_interruption_just_after_begin_leaves_no_write_lock_behind(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Ctrl-C (or a signal handler's exception) landing between ``BEGIN IMMEDIATE`` and the
    transaction's body rolls the transaction back: other writers are not locked out until this
    process exits, and this thread writes again at once."""
    from kling_cost.ledger.sqlite_queue import WriterQueue

    original = WriterQueue.pass_on
    with open_ledger(sqlite_url + "?timeout=1") as ledger:
        ledger.set_budget("project:a", limit=100)

        def interrupted(self: WriterQueue) -> None:
            monkeypatch.setattr(WriterQueue, "pass_on", original)
            raise KeyboardInterrupt

        monkeypatch.setattr(WriterQueue, "pass_on", interrupted)
        with pytest.raises(KeyboardInterrupt):
            if where == "lean":
                ledger.reserve(1, ["project:a"])
            else:
                ledger.set_budget("project:a", limit=200)
        _not_locked_out(sqlite_url)
        ledger.commit(ledger.reserve(5, ["project:a"]), 5)
        assert ledger.usage("project:a").used == Decimal(5)
        assert ledger.usage("project:a").limit == Decimal(100)  # the interrupted change is not there
        assert len(ledger.reservations()) == 1


@pytest.mark.sqlite
def test_an_interruption_while_the_cursor_is_made_leaves_no_write_lock_behind(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for an interruption after ``BEGIN IMMEDIATE``, as the transaction's cursor is
    made (the general path's ``ledger.transaction()``)."""
    from kling_cost.ledger import sqlite as sqlite_backend

    original = sqlite_backend.SQLiteCursor
    with open_ledger(sqlite_url + "?timeout=1") as ledger:
        ledger.set_budget("project:a", limit=100)

        def interrupted(*args: object) -> object:
            monkeypatch.setattr(sqlite_backend, "SQLiteCursor", original)
            raise KeyboardInterrupt

        monkeypatch.setattr(sqlite_backend, "SQLiteCursor", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ledger.set_budget("project:a", limit=200)
        _not_locked_out(sqlite_url)
        ledger.set_budget("project:a", limit=300)
        assert ledger.usage("project:a").limit == Decimal(300)
