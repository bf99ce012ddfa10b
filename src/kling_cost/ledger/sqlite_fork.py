"""SQLite ledgers across ``fork``: a ledger file that was open when the process forked is
refused in the child, with an error that says what to do instead.

SQLite keeps its file locks per process, in memory a forked child copies: the child's new
connections to a file its parent had open count the parent's locks as their own and take
none in the kernel. Once the parent closes the file, the next process to close it believes
it is the last, checkpoints and deletes the WAL, and the child's reservations go to a
deleted file while another process reserves the same budget again (SQLite's "How To Corrupt
An SQLite Database File", section 2.6). Nothing in Python can repair that state, so the child
is told to open the ledger after the fork, to close it before forking, or to start its
workers with ``spawn``.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

from ..errors import StorageError

__all__ = ["check_not_inherited", "track"]


class _Backend(Protocol):
    def open_file(self) -> str | None:
        """The real path of its file while it has a connection open in this process."""


_OPEN: weakref.WeakSet[_Backend] = weakref.WeakSet()
"""Every SQLite backend of this process."""
_AT_FORK: set[str] = set()
"""The files open here at the fork under way (in the parent, until it returns)."""
_INHERITED: set[str] = set()
"""The files that were open in a parent (any ancestor) when this process was forked."""


def track(backend: _Backend) -> None:
    """Register a backend (its :meth:`open_file` is asked at every fork)."""
    _OPEN.add(backend)


def check_not_inherited(real_path: str, shown: str) -> None:
    """Raise :class:`StorageError` when ``real_path`` was open in a parent at a fork."""
    if real_path in _INHERITED:
        raise StorageError(
            f"the SQLite ledger {shown} was open when this process was forked from its parent: "
            "SQLite's locks do not survive a fork, and a reservation made here could be lost. "
            "Open the ledger only after forking (or close it before), or start worker processes "
            'with spawn: multiprocessing.get_context("spawn")'
        )


def _before_fork() -> None:
    _AT_FORK.clear()
    for backend in list(_OPEN):
        path = backend.open_file()
        if path is not None:
            _AT_FORK.add(path)


def _after_fork_in_child() -> None:
    _INHERITED.update(_AT_FORK)
    _AT_FORK.clear()


def _after_fork_in_parent() -> None:
    _AT_FORK.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
