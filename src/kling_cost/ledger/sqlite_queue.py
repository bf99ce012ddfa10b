"""The line SQLite ledger writers of every process wait in: an exclusive ``flock`` of
``<ledger>-writers``, next to the ledger file (the real one, when the ledger's path is a
symlink: SQLite names its ``-wal`` after it too).

SQLite's own write lock has no line: a writer that finds it taken sleeps 1-100 ms between
tries (its busy handler), while a process writing in a loop takes it again within
microseconds of each commit. A second process could wait seconds for one reservation. A
process waiting on a ``flock`` is woken the moment it is released, before the process that
released it comes back for it, so the writers of all processes take turns.

A writer leaves the head of the line as soon as it holds SQLite's write lock, not when its
transaction ends (:meth:`WriterQueue.pass_on`): the next writer in line is woken while that
transaction runs and asks for SQLite's lock at once, again and again for a moment
(:func:`begin_immediate`), so it starts within microseconds of the commit. Only the head of
the line asks; the others wait on the ``flock``. (Holding the line to the end made each
hand-over wait for the next process to wake up: two processes writing in a loop did 4,500
pairs a second together, p99 2 ms; now 8,400, p99 1 ms, each getting half, on 4 KiB pages.)

The line only orders writers: SQLite's lock still keeps them apart (a writer of an earlier
version, or the ``sqlite3`` shell, does not queue and stays safe, though it may wait long).
When the lock file cannot be used (not a regular file, broader than the ledger's writers, made
by a user who may not write the ledger, a platform without ``flock``) a writer goes straight to
SQLite's lock. The file gets read and write permission for exactly the users who may write the
ledger file, whatever the umask, and is opened for writing: a user who may only read the
ledger cannot hold up its writers through it.

A process that dies in line or at its head leaves it: the kernel drops its lock. A forked
child closes its copies of its parent's descriptors at once (a ``flock`` belongs to the open
file: a copy kept by a child would keep a dead parent's place). The wait itself happens in a
helper thread, one per ledger and process, so a writer can give up after the ledger's
``timeout`` (a process stopped inside a transaction must not hang the others for ever) or be
interrupted (Ctrl-C); either way it leaves the line, at once or when its turn comes.
"""

from __future__ import annotations

import _thread
import os
import queue
import sqlite3
import stat
import threading
import time
import weakref
from contextlib import suppress
from types import ModuleType

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["WriterQueue", "begin_immediate", "is_busy"]

_BUSY = (5, 6)
"""SQLITE_BUSY and SQLITE_LOCKED (the low byte of an extended result code)."""
WRITE_SPIN = 0.0003
"""How long the head of the line asks for SQLite's write lock again at once, giving up its
CPU between tries (seconds): the writer before it left the line as its transaction began
(:meth:`WriterQueue.pass_on`), so the lock is usually free within that transaction's tens of
microseconds; sleeping between tries instead (at least 50 us, often 100) halved the
throughput of two processes."""
WRITE_POLL_FIRST = 0.00005
WRITE_POLL_MAX = 0.001
"""How often a writer asks again after that (seconds, doubling from the first to the most):
the transaction before it is a long one, or a writer outside the line holds the lock.
SQLite's own busy handler sleeps up to 100 ms between tries, so a process that lost the lock
a few times starved for seconds."""


def begin_immediate(conn: sqlite3.Connection, deadline: float) -> None:
    """``BEGIN IMMEDIATE`` on ``conn`` (whose busy timeout is 0), asked again at once (for
    :data:`WRITE_SPIN`), then every 50 us to 1 ms while another writer holds SQLite's lock,
    until ``time.monotonic()`` reaches ``deadline`` (then SQLite's busy error goes up)."""
    spin_until = 0.0
    pause = WRITE_POLL_FIRST
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
        now = time.monotonic()
        if not spin_until:
            spin_until = now + WRITE_SPIN
        if now < spin_until:
            os.sched_yield()  # the writer holding the lock may be waiting for this CPU
        else:
            time.sleep(pause)
            pause = min(pause * 2, WRITE_POLL_MAX)


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLite's lock is taken (busy or locked), as opposed to any other error."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY


class _Turn:
    """One wait for the head of the line, handed to the helper thread."""

    __slots__ = ("abandoned", "error", "mutex", "ready")

    def __init__(self) -> None:
        self.ready = _thread.allocate_lock()
        self.ready.acquire()  # released by the helper when the turn comes
        self.mutex = _thread.allocate_lock()
        self.abandoned = False
        self.error = False

    def give_up(self) -> bool:
        """Leave the line; False if the turn came meanwhile (then it is ours)."""
        with self.mutex:
            if self.ready.acquire(blocking=False):
                return False
            self.abandoned = True
            return True


def _wait_turns(fd: int, turns: queue.SimpleQueue[_Turn | None]) -> None:
    """The helper thread: wait in line for each turn asked for, in order, until ``None``
    (sent only when no turn it granted is still held); then close its descriptor."""
    assert fcntl is not None
    try:
        while (turn := turns.get()) is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                failed = False
            except OSError:
                failed = True
            with turn.mutex:
                if turn.abandoned:  # its writer gave up: let the next process in
                    if not failed:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    continue
                turn.error = failed
                turn.ready.release()
    finally:
        with suppress(OSError):
            os.close(fd)


def _lock_mode(ledger: os.stat_result | None) -> int:
    """Read and write for each class of user (owner, group, others) that may write the ledger
    file; only the owner's when it cannot be read."""
    writable = 0o200 if ledger is None else ledger.st_mode & 0o222
    return writable | writable << 1


def _trusted(lock: os.stat_result, ledger: os.stat_result | None) -> bool:
    """A regular file no broader than the ledger's writers, made by this user, the ledger's
    owner, or (a group-writable ledger) in the ledger's group: never one a user who may only
    read the ledger planted to hold up its writers."""
    if not stat.S_ISREG(lock.st_mode):
        return False
    allowed = _lock_mode(ledger)
    if lock.st_mode & 0o777 & ~allowed:
        return False
    if lock.st_uid == os.geteuid() or (ledger is not None and lock.st_uid == ledger.st_uid):
        return True
    return ledger is not None and bool(ledger.st_mode & 0o020) and lock.st_gid == ledger.st_gid


class WriterQueue:
    """The writers' line of one SQLite ledger file, for this process.

    :meth:`acquire` and :meth:`release` are called by one thread at a time (the backend's
    writer lock is held around them); :meth:`close` may come from any thread.
    """

    def __init__(self, db_path: str) -> None:
        self.ledger_file = os.path.realpath(db_path)
        self.path = self.ledger_file + "-writers"
        self._state = threading.Lock()
        self._pid = 0
        self._fd = -1  # this process's place in line, asked for without waiting
        self._turns: queue.SimpleQueue[_Turn | None] | None = None
        self._waiter_fd = -1  # the helper thread's place in line
        self._held = -1  # the descriptor whose lock this process holds now
        self._waiting = False  # a writer is in acquire(): the helper may hand it a turn
        self._closed = False
        self._stopped = False
        self._contended = False  # this turn had to wait in line: others are waiting too
        _LIVE.add(self)

    def _open(self) -> bool:
        """This process's descriptor of the lock file (opened again after a fork, and tried
        again at each write while it could not be). False when there is no usable lock file."""
        if fcntl is None or self._closed:
            return False
        if self._pid != os.getpid():
            self._forget_inherited(fork=False)
            self._pid = os.getpid()
        if self._fd < 0:
            self._fd = self._open_file()
        return self._fd >= 0

    def _open_file(self) -> int:
        """A descriptor of the lock file, or -1 when it cannot be trusted (see :func:`_trusted`)."""
        try:
            ledger: os.stat_result | None = os.stat(self.ledger_file)
        except OSError:
            ledger = None
        mode = _lock_mode(ledger)
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not block
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, mode)
            with suppress(OSError):
                os.fchmod(fd, mode)  # the mode the ledger's writers need, whatever the umask
            return fd
        except FileExistsError:
            pass
        except OSError:
            return -1
        try:
            fd = os.open(self.path, flags)
        except OSError:
            return -1
        try:
            trusted = _trusted(os.fstat(fd), ledger)
        except OSError:
            trusted = False
        if not trusted:
            os.close(fd)
            return -1
        return fd

    def acquire(self, timeout: float) -> bool:
        """Wait for this process's turn: True at the head of the line (or with no usable line),
        False after ``timeout`` seconds in it. Interrupted, it leaves the line."""
        if not self._open():
            return True
        assert fcntl is not None
        with self._state:
            if self._closed:
                return True
            self._held = self._fd  # first: an interruption after the lock is taken releases it
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                self._held = -1
                self._contended = True
            except OSError:
                self._held = -1
                return True
            turns = self._helper()
            if turns is None:
                return True
            self._waiting = True
        try:
            return self._wait(turns, timeout)
        finally:
            with self._state:
                self._waiting = False
                if self._closed and self._held < 0:
                    self._stop()

    def _wait(self, turns: queue.SimpleQueue[_Turn | None], timeout: float) -> bool:
        assert fcntl is not None
        turn = _Turn()
        got = False
        try:
            turns.put(turn)
            got = turn.ready.acquire(timeout=timeout) or not turn.give_up()
            if got and not turn.error:
                self._held = self._waiter_fd
            return got
        except BaseException:  # interrupted (Ctrl-C, a signal handler's exception)
            if self._held < 0:
                if not got and not turn.give_up():
                    got = True  # it came meanwhile
                if got and not turn.error:
                    fcntl.flock(self._waiter_fd, fcntl.LOCK_UN)
            raise

    def _helper(self) -> queue.SimpleQueue[_Turn | None] | None:
        if self._turns is None:
            fd = self._open_file()
            if fd < 0:
                return None
            turns: queue.SimpleQueue[_Turn | None] = queue.SimpleQueue()
            try:
                threading.Thread(
                    target=_wait_turns,
                    args=(fd, turns),
                    name=f"kling-cost writers' line {self.path}",
                    daemon=True,
                ).start()
            except RuntimeError:  # no thread to be had: no line for now, SQLite's lock alone
                os.close(fd)
                return None
            self._waiter_fd, self._turns = fd, turns
        return self._turns

    def pass_on(self) -> None:
        """Leave the head of the line as this process's write transaction begins (SQLite's
        write lock is held now): the next writer in line, of any process, is woken while this
        transaction runs and asks for SQLite's lock at once (:func:`begin_immediate`), so
        its wake-up costs no time between transactions. :meth:`release` still ends the turn."""
        with self._state:
            self._leave()

    def release(self) -> None:
        """End this process's turn: leave the head of the line if it is still there (a no-op
        otherwise), and step aside after a turn that had to wait."""
        with self._state:
            self._leave()
            contended, self._contended = self._contended, False
        if contended:
            # Another process waited for this turn (this one waited for it too): the kernel
            # has woken its writer, often onto this busy CPU, where it would wait for the
            # next scheduler tick (4 ms) unless this thread steps aside. Uncontended, the call
            # is not made.
            os.sched_yield()

    def _leave(self) -> None:
        """(With ``_state`` held.) Unlock the line if this process holds it."""
        fd, self._held = self._held, -1
        if fd >= 0 and fcntl is not None and self._pid == os.getpid():
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        if self._closed and not self._waiting:
            self._stop()

    def close(self) -> None:
        """No more writers: stop the helper thread and close the descriptors, now or, when a
        transaction of another thread is still at the head of the line, as it leaves."""
        with self._state:
            self._closed = True
            if self._held < 0 and not self._waiting:
                self._stop()

    def _stop(self) -> None:
        """(With ``_state`` held, nothing held or awaited.) The helper closes its own descriptor
        after the turns before it (forgotten here: its number may be reused); a child never
        opened any of these."""
        if self._stopped or self._pid != os.getpid():
            return
        self._stopped = True
        if self._turns is not None:
            self._turns.put(None)
            self._turns, self._waiter_fd = None, -1
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def after_fork_in_child(self) -> None:
        """(Run in every forked child.) Close the line's descriptors inherited from the parent
        at once: if the parent died at the head of the line, the child's copy would keep the
        lock (a ``flock`` belongs to the open file) while the child lives."""
        self._state = threading.Lock()  # the copy may have been held by a thread the child lacks
        if self._pid not in (0, os.getpid()):
            self._forget_inherited(fork=True)

    def _forget_inherited(self, *, fork: bool) -> None:
        """Close the descriptors a forked child copied from its parent (never the parent's
        lock: the parent still holds its own copy) and start afresh."""
        if fork:
            for fd in (self._fd, self._waiter_fd):
                if fd >= 0:
                    with suppress(OSError):
                        os.close(fd)
        self._pid, self._fd, self._turns, self._waiter_fd, self._held = 0, -1, None, -1, -1
        self._waiting = False


_LIVE: weakref.WeakSet[WriterQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for line in list(_LIVE):
        line.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
