"""An outside review's attacks on the SQLite writers' line (``ledger/sqlite_queue.py``), the
snapshot reads and the read-first open, kept as regression tests: each failed before its fix."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import kling_cost
from kling_cost.errors import StorageError
from kling_cost.ledger import open_ledger
from kling_cost.ledger.sqlite import SQLiteBackend
from tests.helpers import run_python

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(kling_cost.__file__).resolve().parents[1]
"""The package under test (child processes import the same one)."""


def _another_process_writes(url: str) -> str:
    """One reserve+release by a fresh process; its stdout ("ok" or the error)."""
    done = run_python(
        f"""
        from kling_cost.ledger import open_ledger
        try:
            with open_ledger({url!r}) as ledger:
                ledger.release(ledger.reserve(1, ["project:a"]))
            print("ok")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    return done.stdout.strip() + done.stderr[-500:]


def _wait_for(path: Path, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.01)
    return path.read_text()


@pytest.mark.sqlite
def test_a_killed_writer_leaves_the_line_even_when_it_forked_children(
    sqlite_url: str, tmp_path: Path
) -> None:
    # A process that opened the ledger forks a worker (multiprocessing's fork pools, a
    # pre-forking server), then is SIGKILLed (OOM killer, kill -9) inside a write transaction.
    # Its line descriptor was inherited by the worker, so the flock outlives it: every writer of
    # every process then fails with "no write lock" until that worker exits.
    inside, worker_pid = tmp_path / "inside", tmp_path / "worker"
    script = f"""
        import os, time
        from kling_cost.ledger import open_ledger
        ledger = open_ledger({sqlite_url!r})
        ledger.release(ledger.reserve(1, ["project:a"]))  # the line's descriptor is open
        pid = os.fork()
        if pid == 0:
            time.sleep(60)  # an idle pool worker
            os._exit(0)
        open({str(worker_pid)!r}, "w").write(str(pid))
        with ledger.transaction() as cur:
            cur.execute("UPDATE budgets SET updated_at = updated_at")
            open({str(inside)!r}, "w").write("in")
            time.sleep(60)
    """
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env)
    try:
        _wait_for(inside)
        parent.kill()
        parent.wait(10)
        outcome = _another_process_writes(sqlite_url + "?timeout=2")
    finally:
        parent.kill()
        if worker_pid.exists():
            os.kill(int(worker_pid.read_text()), signal.SIGKILL)
    assert outcome == "ok", f"the dead writer's line outlived it in its forked worker: {outcome}"


@pytest.mark.sqlite
def test_a_fifo_for_the_lock_file_does_not_hang_a_writer_past_its_timeout(sqlite_url: str) -> None:
    # os.open(O_RDONLY) of a FIFO blocks until a writer opens it: the writer hangs for ever in
    # WriterQueue._open_file, whatever ?timeout= says (and every thread of the process with it).
    path = sqlite_url.removeprefix("sqlite:///")
    os.remove(path + "-writers")  # made by the fixture's first write
    os.mkfifo(path + "-writers")
    ledger = open_ledger(sqlite_url + "?timeout=1")
    outcome: list[str] = []

    def write() -> None:
        try:
            ledger.release(ledger.reserve(1, ["project:a"]))
            outcome.append("ok")
        except Exception as exc:  # a clear error within the timeout is fine too
            outcome.append(f"{type(exc).__name__}: {exc}")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(5)
    hung = writer.is_alive()
    if hung:  # let it go: a writer on the FIFO completes the blocked open
        fd = os.open(path + "-writers", os.O_WRONLY | os.O_NONBLOCK)
        writer.join(10)
        os.close(fd)
    ledger.close()
    assert not hung, "a writer hung opening a FIFO lock file, past ?timeout=1"
    assert outcome


class _Interrupted(BaseException):
    """What a signal handler raises: KeyboardInterrupt, Celery's soft time limit, an alarm."""


@pytest.mark.sqlite
def test_an_interrupted_wait_in_line_does_not_keep_the_line(sqlite_url: str, tmp_path: Path) -> None:
    # Ctrl-C in a notebook (or a soft time limit) while a write waits in line: the helper thread
    # still takes the turn when it comes, hands it to nobody and keeps the flock; every other
    # process's writer then fails until this process happens to write again.
    path = sqlite_url.removeprefix("sqlite:///")
    ledger = open_ledger(sqlite_url + "?timeout=10")
    ledger.release(ledger.reserve(1, ["project:a"]))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({path + '-writers'!r}, os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(1)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    previous = signal.getsignal(signal.SIGUSR1)

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    signal.signal(signal.SIGUSR1, interrupt)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(_Interrupted):
            ledger.reserve(1, ["project:a"])
        holder.wait(10)
        time.sleep(0.2)
        outcome = _another_process_writes(sqlite_url + "?timeout=2")
    finally:
        signal.signal(signal.SIGUSR1, previous)
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
        ledger.release(ledger.reserve(1, ["project:a"]))  # (this frees the line again)
        ledger.close()
    assert outcome == "ok", f"the interrupted process kept the line: {outcome}"


def _fill_charges(path: str, rows: int) -> None:
    """``rows`` copies of the last charge (history for the readers), written directly."""
    conn = sqlite3.connect(path, isolation_level=None)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(charges)") if r[1] != "id"]
    last = conn.execute(f"SELECT {', '.join(cols)} FROM charges ORDER BY id DESC LIMIT 1").fetchone()
    conn.execute("BEGIN IMMEDIATE")
    marks = ", ".join("?" * len(cols))
    conn.executemany(f"INSERT INTO charges ({', '.join(cols)}) VALUES ({marks})", [last] * rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.sqlite
def test_the_wal_stays_bounded_while_ledger_reads_overlap(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ledger.charges() (export, dashboard) is a snapshot now, and the RESTART checkpoint waits
    # 1 ms for readers: while one reader or another always has a snapshot open (an export
    # loop, several dashboards), the WAL never restarts and grows with every write (~40 KB a
    # pair: GBs in minutes under load). Before, these reads took the write lock (no overlap).
    monkeypatch.setattr(SQLiteBackend, "checkpoint_pages", 64)  # 256 KiB
    monkeypatch.setattr(SQLiteBackend, "checkpoint_poll", 0.005)
    monkeypatch.setattr(SQLiteBackend, "checkpoint_cap_pages", 512)  # 2 MiB
    monkeypatch.setattr(SQLiteBackend, "checkpoint_cap_wait_ms", 10_000)  # (no pause after a miss)
    path = sqlite_url.removeprefix("sqlite:///")
    with open_ledger(sqlite_url) as setup:
        setup.commit(setup.reserve(Decimal("0.001"), ["project:a"]), Decimal("0.001"))
    _fill_charges(path, 5_000)
    stop = threading.Event()
    with open_ledger(sqlite_url) as ledger:

        def read(offset: float) -> None:
            time.sleep(offset)
            while not stop.is_set():
                ledger.charges()

        readers = [threading.Thread(target=read, args=(i * 0.05,)) for i in range(2)]
        for r in readers:
            r.start()
        largest = 0
        try:
            for _ in range(400):
                ledger.commit(ledger.reserve(Decimal("0.001"), ["project:a"]), Decimal("0.001"))
                largest = max(largest, os.path.getsize(path + "-wal"))
        finally:
            stop.set()
            for r in readers:
                r.join(30)
    cap = 512 * 4096
    assert largest < 3 * cap, f"the WAL grew to {largest / 1e6:.1f} MB (cap {cap / 1e6:.2f} MB)"


@pytest.mark.postgres
def test_opening_a_migrated_postgres_ledger_only_reads(pg_url: str) -> None:
    # README: "Opening a ledger that is already migrated only reads." On PostgreSQL opening
    # still runs a write transaction (advisory lock + CREATE SCHEMA IF NOT EXISTS), so a
    # read-only role or a hot standby cannot open the ledger for a report or the dashboard.
    with open_ledger(pg_url) as setup:
        setup.set_budget("project:a", 5)
        schema = setup.backend.schema  # type: ignore[attr-defined]
    role = f"review_ro_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(pg_url.split("?", maxsplit=1)[0], autocommit=True)
    try:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT ALL ON SCHEMA "{schema}" TO "{role}"')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        admin.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')  # a standby
        parts = urlsplit(pg_url)  # the same server and schema, as the read-only role (trust auth)
        ro_url = urlunsplit(parts._replace(netloc=f"{role}@" + parts.netloc.rsplit("@", 1)[-1]))
        with open_ledger(ro_url) as reader:
            assert [b.scope for b in reader.budgets()] == ["project:a"]
    finally:
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


@pytest.mark.sqlite
def test_a_snapshot_reader_sees_a_consistent_state(sqlite_url: str) -> None:
    # (holds) a snapshot read while a raw connection holds the write lock answers at once
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE budget_windows SET used_milli = used_milli")
    try:
        with open_ledger(sqlite_url + "?timeout=5") as ledger:
            started = time.monotonic()
            assert [u.budget.scope for u in ledger.usages()] == ["project:a"]
            assert time.monotonic() - started < 1
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@pytest.mark.sqlite
def test_one_timeout_covers_the_wait_for_other_threads_and_the_line(sqlite_url: str, tmp_path: Path) -> None:
    # Each waiting thread used to get ?timeout= for this process's writer lock and as long
    # again in line: 3 threads behind another process gave up after up to 2 x the timeout.
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tests.ledger.workers import hold_one_write; "
            f"hold_one_write({sqlite_url!r}, 4.0, {str(ready)!r})",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)])},
    )
    try:
        _wait_for(ready)
        ledger = open_ledger(sqlite_url + "?timeout=1")
        waited: list[float] = []

        def write() -> None:
            started = time.monotonic()
            with pytest.raises(StorageError, match="no write lock within 1 s"):
                ledger.reserve(1, ["project:a"])
            waited.append(time.monotonic() - started)

        threads = [threading.Thread(target=write) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        ledger.close()
        assert len(waited) == 3
        assert max(waited) < 1.6, waited
    finally:
        holder.kill()
        holder.wait(10)


@pytest.mark.sqlite
def test_the_lock_file_is_for_those_who_may_write_the_ledger(tmp_path: Path) -> None:
    # Read access to the lock file was enough to hold up every writer; now it is made and
    # opened for writing, with read and write for the classes that may write the ledger.
    db = tmp_path / "ledger.db"
    for ledger_mode, lock_mode in ((0o644, 0o600), (0o664, 0o660)):
        for leftover in tmp_path.iterdir():
            leftover.unlink()
        db.touch()
        db.chmod(ledger_mode)
        with open_ledger(f"sqlite:///{db}") as ledger:
            ledger.set_budget("project:a", 5)
        assert (tmp_path / "ledger.db-writers").stat().st_mode & 0o777 == lock_mode


@pytest.mark.sqlite
def test_a_symlinked_ledger_file_shares_the_real_files_line(tmp_path: Path) -> None:
    # SQLite names the -wal after the real file; two names for one ledger made two lines.
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with open_ledger(f"sqlite:///{real}") as a, open_ledger(f"sqlite:///{link}") as b:
        a.set_budget("project:a", 5)
        b.commit(b.reserve(1, ["project:a"]), 1)
        assert a.backend._queue.path == b.backend._queue.path == str(real) + "-writers"  # type: ignore[attr-defined]
    assert not (tmp_path / "link.db-writers").exists()


@pytest.mark.sqlite
def test_closing_while_another_thread_writes_leaves_its_line_intact(sqlite_url: str) -> None:
    # close() from one thread while another is inside a write transaction: the writer finishes
    # and leaves the line; nothing is closed under it, and another process then writes at once.
    ledger = open_ledger(sqlite_url)
    ledger.set_budget("project:a", 10)
    inside, leave = threading.Event(), threading.Event()

    def write() -> None:
        with ledger.transaction() as cur:
            cur.execute("UPDATE budgets SET updated_at = updated_at")
            inside.set()
            leave.wait(10)

    writer = threading.Thread(target=write)
    before = len(os.listdir("/proc/self/fd"))
    writer.start()
    assert inside.wait(10)
    ledger.close()
    leave.set()
    writer.join(10)
    assert not writer.is_alive()
    assert _another_process_writes(sqlite_url + "?timeout=2") == "ok"
    assert len(os.listdir("/proc/self/fd")) <= before
