"""Shared test helpers: an injectable clock and access to the PostgreSQL test server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import kling_cost

POSTGRES_URL = os.environ.get("KLING_COST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


_IMPORTS = os.pathsep.join(
    [str(Path(kling_cost.__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1])]
)
"""The package under test and the repository root (for ``tests.*``), for child interpreters."""


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter importing this package; never raises for
    its exit code (the caller reads ``stdout`` and ``stderr``)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": _IMPORTS},
        timeout=timeout,
    )


def services_required() -> bool:
    return os.environ.get("KLING_COST_REQUIRE_SERVICES") == "1"


_pg_state: dict[str, str | None] = {}


def postgres_problem() -> str | None:
    """None when the PostgreSQL test server answers, else why not (cached)."""
    if "problem" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _pg_state["problem"] = None
        except Exception as exc:  # any failure means: no usable server
            _pg_state["problem"] = f"{type(exc).__name__}: {exc}".strip()
    return _pg_state["problem"]


def need_postgres() -> None:
    """Skip (or, with KLING_COST_REQUIRE_SERVICES=1, fail) when PostgreSQL is unavailable."""
    problem = postgres_problem()
    if problem is None:
        return
    message = (
        f"PostgreSQL not available at {POSTGRES_URL} ({problem}); start it or set "
        "KLING_COST_TEST_POSTGRES_URL to enable these tests"
    )
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


def fresh_postgres_url() -> str:
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}schema=t_{uuid.uuid4().hex[:12]}"


class FakeClock:
    """A clock tests move by hand (thread-safe); never sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now
