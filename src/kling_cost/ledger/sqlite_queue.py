"""The line SQLite ledger writers of every process wait in: an exclusive ``flock`` of
``<ledger>-writers``, next to the ledger file.

SQLite's own write lock has no line: a writer that finds it taken sleeps 1-100 ms between
tries (its busy handler), while a process writing in a loop takes it again within
microseconds of each commit. A second process could wait seconds for one reservation. The
kernel wakes a process waiting on a ``flock`` the moment it is released, so the writers of
all processes take turns.

The line only orders writers: SQLite's lock still keeps them apart (a writer of an earlier
version, or the ``sqlite3`` shell, does not queue and stays safe). When the lock file cannot
be opened (another user's, a platform without ``flock``) a writer goes straight to SQLite's
lock. A process that dies in line or at its head leaves it: the kernel drops its lock.

The wait itself happens in a helper thread, one per ledger and process, so a writer can give
up after the ledger's ``timeout`` (a process stopped inside a transaction must not hang the
others for ever); the helper then leaves the line as soon as its turn comes.
"""

from __future__ import annotations

import _thread
import os
import queue
import threading
from contextlib import suppress
from types import ModuleType

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["WriterQueue"]


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
    """The helper thread: wait in line for each turn asked for, in order, until ``None``."""
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


class WriterQueue:
    """The writers' line of one SQLite ledger file, for this process.

    :meth:`acquire` and :meth:`release` are called by one thread at a time (the backend's
    writer lock is held around them).
    """

    def __init__(self, db_path: str) -> None:
        self.path = db_path + "-writers"
        self._pid = 0
        self._fd = -1  # this process's place in line, asked for without waiting
        self._turns: queue.SimpleQueue[_Turn | None] | None = None
        self._waiter_fd = -1  # the helper thread's place in line
        self._held = -1  # the descriptor whose lock this process holds now
        self._closed = False

    def _open(self) -> bool:
        """This process's descriptor of the lock file (opened again after a fork: a child must
        not share its parent's lock). False when there is no usable lock file."""
        if fcntl is None or self._closed:
            return False
        if self._pid == os.getpid():
            return self._fd >= 0
        self._pid, self._fd, self._turns, self._waiter_fd, self._held = os.getpid(), -1, None, -1, -1
        self._fd = self._open_file()
        return self._fd >= 0

    def _open_file(self) -> int:
        try:
            mode = os.stat(self.path.removesuffix("-writers")).st_mode & 0o666
        except OSError:
            mode = 0o644
        try:  # read-only is enough for flock, and lets every user who can read the ledger queue
            return os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        except OSError:
            return -1

    def acquire(self, timeout: float) -> bool:
        """Wait for this process's turn: True at the head of the line (or with no usable line),
        False after ``timeout`` seconds in it."""
        if not self._open():
            return True
        assert fcntl is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._held = self._fd
            return True
        except BlockingIOError:
            pass
        except OSError:
            return True
        turns = self._helper()
        if turns is None:
            return True
        turn = _Turn()
        turns.put(turn)
        if turn.ready.acquire(timeout=timeout) or not turn.give_up():
            if not turn.error:
                self._held = self._waiter_fd
            return True
        return False

    def _helper(self) -> queue.SimpleQueue[_Turn | None] | None:
        if self._turns is None:
            fd = self._open_file()
            if fd < 0:
                return None
            self._waiter_fd, self._turns = fd, queue.SimpleQueue()
            threading.Thread(
                target=_wait_turns,
                args=(fd, self._turns),
                name=f"kling-cost writers' line {self.path}",
                daemon=True,
            ).start()
        return self._turns

    def release(self) -> None:
        """Leave the head of the line (a no-op when this process is not there)."""
        fd, self._held = self._held, -1
        if fd >= 0 and fcntl is not None and self._pid == os.getpid():
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Stop the helper thread and close this process's descriptor."""
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid():
            return  # a child never opened its own
        self.release()
        if self._turns is not None:
            self._turns.put(None)  # the helper closes its own descriptor as it ends
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
        self._fd = -1
