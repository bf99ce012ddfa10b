"""A second outside review's attacks on the SQLite writers' line, the capped checkpointer and
SQLite across fork, kept as regression tests: each failed before its fix."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import threading
import time
import types
from contextlib import suppress
from pathlib import Path

import pytest

from kling_cost.errors import StorageError
from kling_cost.ledger import open_ledger, sqlite_queue
from tests.helpers import run_python

pytestmark = [pytest.mark.slow, pytest.mark.sqlite]


def _is_lock_timeout(outcome: str) -> bool:
    return "no write lock" in outcome or "database is locked" in outcome


def test_a_forked_childs_reservation_is_not_lost_when_its_parent_closes_the_ledger(sqlite_url: str) -> None:
    # A process that has the ledger open forks a worker (multiprocessing's default on Linux, a
    # pre-forking server) and the worker goes on using it with connections of its own. SQLite
    # keeps its locks per process, in state the child copied: the child's new connections count
    # the parent's locks as their own and take none in the kernel (SQLite: "do not carry an
    # open database connection across a fork"). Once the parent closes the ledger, the next
    # process to close it believes it is the last, checkpoints and deletes the WAL: the child's
    # reservations then go to a deleted file, and another process reserves the same budget again.
    path = sqlite_url.removeprefix("sqlite:///")
    script = f"""
        import os, subprocess, sys
        from kling_cost.ledger import open_ledger
        url = {sqlite_url!r}

        def other(code):
            done = subprocess.run(
                [sys.executable, "-c", "from kling_cost.ledger import open_ledger\\n"
                 f"ledger = open_ledger({{url!r}})\\n" + code + "\\nledger.close()"],
                capture_output=True, text=True)
            return (done.stdout + done.stderr[-300:]).strip()

        ledger = open_ledger(url)
        ledger.set_budget("project:b", 100)
        ledger.release(ledger.reserve(1, ["project:b"]))
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                ledger.release(ledger.reserve(1, ["project:b"]))
                os.write(ready_w, b"1")
                os.read(go_r, 1)
                ledger.reserve(60, ["project:b"])
                print("child: reserved 60", flush=True)
            except Exception as exc:
                print("child refused:", type(exc).__name__, exc, flush=True)
                os.write(ready_w, b"1")
            os.write(ready_w, b"2")
            os._exit(0)
        os.read(ready_r, 1)
        ledger.close()  # the parent is done with the ledger; its worker goes on
        other("ledger.budgets()")  # a report opens and closes it
        os.write(go_w, b"g")
        os.read(ready_r, 1)
        print("another process:", other("ledger.reserve(60, ['project:b']); print('reserved 60')"), flush=True)
        os.waitpid(pid, 0)
        print("wal", os.path.exists({path + "-wal"!r}))
    """
    done = run_python(script)
    out = done.stdout + done.stderr[-2000:]
    assert "child: reserved 60" in out or "child refused" in out, out
    if "child: reserved 60" in out:  # then no one else may have 60 of the 100 as well
        assert "reserved 60" not in out.split("another process:", 1)[1], out


def test_a_child_forked_during_a_write_of_its_parent_is_not_locked_out_for_ever(sqlite_url: str) -> None:
    # A thread of the parent is inside a write transaction at the fork (the capped checkpoint
    # below is the same: it holds the writers for up to 2 s). The child copies the backend's
    # _writers lock held by a thread it does not have, and SQLite's per-process lock state
    # with the write lock taken: every write of the child then fails after ?timeout= for the
    # rest of its life. It should write once the parent committed, or refuse at once.
    done = run_python(
        f"""
        import os, threading, time
        from kling_cost.ledger import open_ledger
        ledger = open_ledger({sqlite_url!r} + "?timeout=1")
        inside, leave = threading.Event(), threading.Event()

        def write():
            with ledger.transaction() as cur:
                cur.execute("UPDATE budgets SET updated_at = updated_at")
                inside.set()
                leave.wait(10)

        writer = threading.Thread(target=write)
        writer.start()
        assert inside.wait(10)
        pid = os.fork()
        if pid == 0:
            time.sleep(0.5)  # the parent has committed by now
            try:
                ledger.release(ledger.reserve(1, ["project:a"]))
                print("child: ok", flush=True)
            except Exception as exc:
                print("child:", type(exc).__name__, exc, flush=True)
            os._exit(0)
        leave.set()
        writer.join(10)
        os.waitpid(pid, 0)
        """
    )
    out = done.stdout + done.stderr[-2000:]
    assert "child:" in out and not _is_lock_timeout(out), out


def test_a_child_forked_while_the_checkpointer_caps_the_wal_is_not_locked_out_for_ever(
    sqlite_url: str,
) -> None:
    # The same through the capped checkpoint, which holds _writers and (in each RESTART)
    # SQLite's write lock for up to checkpoint_cap_wait_ms while readers overlap.
    done = run_python(
        f"""
        import contextlib, os, threading, time
        from kling_cost.errors import StorageError
        from kling_cost.ledger import open_ledger
        from kling_cost.ledger.sqlite import SQLiteBackend
        SQLiteBackend.checkpoint_pages = 8
        SQLiteBackend.checkpoint_poll = 0.01
        SQLiteBackend.checkpoint_cap_pages = 16
        SQLiteBackend.checkpoint_cap_wait_ms = 3000
        ledger = open_ledger({sqlite_url!r} + "?timeout=12")  # (a hold is at most timeout / 4)
        backend = ledger.backend
        reading, leave = threading.Event(), threading.Event()

        def read():  # an export holding one snapshot: the WAL cannot restart
            with backend.transaction(snapshot=True) as cur:
                cur.execute("SELECT COUNT(*) FROM budgets")
                cur.fetchone()
                reading.set()
                leave.wait(20)

        reader = threading.Thread(target=read)
        reader.start()
        assert reading.wait(10)
        holding = threading.Event()
        hold = SQLiteBackend.writers_held

        @contextlib.contextmanager
        def noted(self, seconds):
            with hold(self, seconds) as held:
                holding.set()
                yield held

        SQLiteBackend.writers_held = noted

        def write():  # until the checkpointer holds the writers (and a while after)
            for _ in range(3000):
                if holding.is_set():
                    return
                try:
                    ledger.release(ledger.reserve(1, ["project:a"]))
                except StorageError:
                    pass

        writer = threading.Thread(target=write)
        writer.start()
        if not holding.wait(20):
            raise SystemExit("the checkpointer never held the writers")
        pid = os.fork()
        if pid == 0:
            SQLiteBackend.checkpoint_cap_pages = 10**9  # (the child's own checkpointer never caps)
            time.sleep(4)  # the parent's checkpoint is over (its reader left at the fork)
            outcome, deadline = "", time.monotonic() + 4
            while time.monotonic() < deadline:
                try:
                    ledger.release(ledger.reserve(1, ["project:a"]))
                    outcome = "ok"
                    break
                except Exception as exc:
                    outcome = f"{{type(exc).__name__}} {{exc}}"
            print("child:", outcome, flush=True)
            os._exit(0)
        leave.set()
        reader.join(10)
        writer.join(30)
        os.waitpid(pid, 0)
        ledger.close()
        """
    )
    out = done.stdout + done.stderr[-2000:]
    assert "child:" in out and not _is_lock_timeout(out), out


def test_a_closed_ledger_does_not_close_a_forked_childs_unrelated_descriptor(sqlite_url: str) -> None:
    # WriterQueue._stop hands the helper's descriptor to the helper (which closes it) but keeps
    # its number in _waiter_fd; the queue stays in _LIVE while the ledger object lives. The
    # at-fork hook then closes that number in every forked child: by then it is some other
    # descriptor (a log file, a multiprocessing pipe, another ledger's database file).
    path = sqlite_url.removeprefix("sqlite:///")
    done = run_python(
        f"""
        import fcntl, os, threading
        from kling_cost.ledger import open_ledger
        ledger = open_ledger({sqlite_url!r} + "?timeout=5")
        ledger.release(ledger.reserve(1, ["project:a"]))
        other = os.open({path + "-writers"!r}, os.O_RDWR)  # another process's writer, briefly
        fcntl.flock(other, fcntl.LOCK_EX)
        threading.Timer(0.3, fcntl.flock, (other, fcntl.LOCK_UN)).start()
        ledger.release(ledger.reserve(1, ["project:a"]))  # waited in line: the helper thread
        os.close(other)
        stale = ledger.backend._queue._waiter_fd
        assert stale >= 0
        ledger.close()
        for t in threading.enumerate():
            if t.name.startswith("kling-cost writers' line"):
                t.join(5)
        r, w = os.pipe()  # an unrelated descriptor now has that number
        if stale == r:
            r = os.dup(r)
        if stale != w:
            os.dup2(w, stale)
        pid = os.fork()
        if pid == 0:
            try:
                os.write(stale, b"x")
                os._exit(0)
            except OSError:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        """
    )
    assert "child exit 0" in done.stdout, done.stdout + done.stderr[-2000:]


def test_the_lock_file_mode_does_not_depend_on_the_umask(tmp_path: Path) -> None:
    # README: "It is readable and writable by exactly the users who may write the ledger file."
    # With the common umask 022, a group-writable ledger (0664, shared by a team's services)
    # got a 0640 lock file: the group's other writers cannot open it, so they never queue and
    # are starved the old way. SQLite gives its -wal and -shm the ledger's mode (fchmod).
    db = tmp_path / "ledger.db"
    db.touch()
    db.chmod(0o664)
    previous = os.umask(0o022)
    try:
        with open_ledger(f"sqlite:///{db}") as ledger:
            ledger.set_budget("project:a", 5)
            wal_mode = stat.S_IMODE((tmp_path / "ledger.db-wal").stat().st_mode)
    finally:
        os.umask(previous)
    lock_mode = stat.S_IMODE((tmp_path / "ledger.db-writers").stat().st_mode)
    assert wal_mode == 0o664  # (SQLite)
    assert lock_mode == 0o660, oct(lock_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="needs a system Python")
def test_a_user_who_may_only_read_the_ledger_cannot_hold_up_its_writers(tmp_path: Path) -> None:
    # README: "A user who may only read the ledger cannot hold up its writers through it." In a
    # directory that user may write (a shared or sticky one), they create the lock file first,
    # readable and writable by all, and hold it: every writer opens it (it is a regular file;
    # its owner and mode are not checked) and fails after ?timeout=.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    db = shared / "ledger.db"
    url = f"sqlite:///{db}"
    with open_ledger(url) as setup:
        setup.set_budget("project:a", 10**6)
    (shared / "ledger.db-writers").unlink()  # as before the first writer ever ran
    db.chmod(0o644)
    dfd = os.open(shared, os.O_RDONLY | os.O_DIRECTORY)
    script = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open('ledger.db-writers', os.O_RDWR | os.O_CREAT, 0o666, dir_fd={dfd})\n"
        "os.fchmod(fd, 0o666)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(5)\n"
    )
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-c", script],  # (one that user may run)
        pass_fds=(dfd,),
        user=65534,
        group=65534,
        extra_groups=[],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert (shared / "ledger.db-writers").stat().st_uid == 65534
        with open_ledger(url + "?timeout=1") as ledger:
            ledger.release(ledger.reserve(1, ["project:a"]))  # StorageError on c2177a5
    finally:
        os.close(dfd)
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_helper_thread_that_could_not_start_leaves_no_dead_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WriterQueue._helper stores the queue of turns before starting its thread: when start()
    # fails once ("can't start new thread": a pids limit, memory pressure), every later wait
    # in line of this process puts its turn in a queue nobody reads and fails after ?timeout=,
    # for the life of the ledger, even once threads can be started again.
    path = sqlite_url.removeprefix("sqlite:///")
    ledger = open_ledger(sqlite_url + "?timeout=3")
    ledger.release(ledger.reserve(1, ["project:a"]))
    other = os.open(path + "-writers", os.O_RDWR)  # another process's writer
    fcntl.flock(other, fcntl.LOCK_EX)
    try:

        class _NoThreads:
            def __init__(self, *args: object, **kwargs: object) -> None:
                pass

            def start(self) -> None:
                raise RuntimeError("can't start new thread")

        monkeypatch.setattr(
            sqlite_queue, "threading", types.SimpleNamespace(Lock=threading.Lock, Thread=_NoThreads)
        )
        with suppress(RuntimeError, StorageError):  # (or SQLite's lock alone, this once)
            ledger.release(ledger.reserve(1, ["project:a"]))
        monkeypatch.undo()  # threads can be started again
        threading.Timer(0.3, fcntl.flock, (other, fcntl.LOCK_UN)).start()
        started = time.monotonic()
        ledger.release(ledger.reserve(1, ["project:a"]))  # StorageError after 3 s on c2177a5
        assert time.monotonic() - started < 2
    finally:
        os.close(other)
        ledger.close()
