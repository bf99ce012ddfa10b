"""Real processes for CLI tests: ``kling-cost simulate`` on a loopback port, and ``kling-cost``
on a real pseudo-terminal (its controlling terminal, so writing ``\\x03`` is a Ctrl-C: the
kernel sends SIGINT to it, as a shell's terminal would)."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from kling_cost.kling.auth import JWTAuth
from tests.servers import AK, SK, free_port

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")

# A session leader whose stdin/stdout/stderr are the terminal makes it its controlling
# terminal (and its process group the terminal's foreground group), then runs the CLI.
_SHIM = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'kling_cost', *sys.argv[1:]])\n"
)


class Terminal:
    """``kling-cost ARGS`` on a pseudo-terminal of ``cols`` x ``rows``; everything it prints
    is collected (ANSI codes removed) for :meth:`expect`."""

    def __init__(self, args: list[str], env: Mapping[str, str], cols: int = 250, rows: int = 50) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SHIM, *args],
            env={**env, "TERM": "xterm-256color", "COLUMNS": str(cols)},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self._raw = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                data = b""
            with self._changed:
                if not data:
                    self._raw += b"\0"  # end marker, never printed by the CLI
                    self._changed.notify_all()
                    return
                self._raw += data
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            raw = bytes(self._raw).rstrip(b"\0")
        return ANSI.sub("", raw.decode("utf-8", "replace"))

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regular expression) appears in the output."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        with self._changed:
            while True:
                found = compiled.search(self.text)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._raw.endswith(b"\0"):
                    raise AssertionError(f"{pattern!r} not printed within {timeout} s; got:\n{self.text}")
                self._changed.wait(left)

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def ctrl_c(self) -> None:
        self.send("\x03")

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        os.close(self.master)


@contextmanager
def terminal(args: list[str], env: Mapping[str, str]) -> Iterator[Terminal]:
    term = Terminal(args, env)
    try:
        yield term
    finally:
        term.close()


def cli(env: Mapping[str, str], *args: str, timeout: float = 60) -> str:
    """Run ``kling-cost ARGS`` to its end (no terminal); its stdout. Fails on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "kling_cost", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def command_args(printed: str) -> list[str]:
    """The arguments of a ``kling-cost ...`` command line the CLI printed."""
    words = shlex.split(printed)
    assert words[0] == "kling-cost", printed
    return words[1:]


@contextmanager
def simulator(*options: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``kling-cost simulate OPTIONS`` in its own process on a free loopback port; yields its
    URL and an environment with its credentials (and none of the developer's settings)."""
    port = free_port()
    env = {**os.environ, "KLING_ACCESS_KEY": AK, "KLING_SECRET_KEY": SK}
    for name in ("KLING_COST_LEDGER", "KLING_COST_CATALOG", "KLING_BASE_URL", "KLING_COST_CONFIG"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kling_cost", "simulate", "--port", str(port), *options],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the simulator did not start: {proc.communicate()}") from None
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def kling_tasks(base: str) -> list[dict[str, Any]]:
    """Every task the simulator (Kling) accepted, with its status."""
    auth = JWTAuth(AK, SK)
    answer = httpx.get(
        f"{base}/_simulator/state", headers={"Authorization": auth.authorization()}, timeout=10
    )
    answer.raise_for_status()
    tasks: list[dict[str, Any]] = answer.json()["data"]["tasks"]
    return tasks


def wait_all_ended(base: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = kling_tasks(base)
        if all(t["task_status"] in ("succeed", "failed") for t in tasks):
            return tasks
        assert time.monotonic() < deadline, tasks
        time.sleep(0.1)
