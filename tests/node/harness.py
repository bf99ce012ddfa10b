"""The npm package ``kling-api`` (an unmodified third-party Kling client) as a test client.

``kling_api_node`` (session fixture, imported by ``tests/conftest.py``) installs the pinned
package once per session with ``npm ci`` into a cached directory and returns a
:class:`KlingApiNode`; ``KlingApiNode.run(base_url, access_key, secret_key, ca_file=...)`` runs
``kling_api_client/run.mjs`` against any ``https://`` server (the simulator, the proxy) and
returns what it printed. Without Node or npm, or when ``npm ci`` fails, the fixture skips with
a reason (it fails instead under ``KLING_COST_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import services_required

CLIENT_DIR = Path(__file__).parent / "kling_api_client"
SOURCES = ("package.json", "package-lock.json", "run.mjs")
LOCK_FILES = ("package.json", "package-lock.json")
MIN_NODE_MAJOR = 18  # kling-api 1.0.0: "engines": {"node": ">=18.0.0"}
NPM_TIMEOUT = 100.0
MARKER = ".kling-cost-harness"

# Never handed to the Node process: axios would send loopback requests to a proxy, the package
# would fall back to the developer's own Kling keys, and NODE_ENV=production hides Kling's messages.
_DROPPED_ENV = frozenset(
    {
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
        "node_env",
        "node_options",
        "kling_access_key",
        "kling_secret_key",
    }
)


@dataclass(frozen=True)
class KlingApiRun:
    """What one run printed: ``result`` is run.mjs's JSON line."""

    returncode: int
    result: dict[str, Any]
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result.get("ok") is True

    @property
    def task_id(self) -> str | None:
        value = self.result.get("task_id")
        return None if value is None else str(value)

    @property
    def final_unit_deduction(self) -> Decimal | None:
        value = self.result.get("final_unit_deduction")
        return None if value is None else Decimal(str(value))

    @property
    def error(self) -> dict[str, Any] | None:
        error = self.result.get("error")
        return error if isinstance(error, dict) else None


class KlingApiNode:
    """The installed client: ``directory`` holds run.mjs and node_modules/kling-api."""

    def __init__(self, directory: Path, node: str) -> None:
        self.directory = directory
        self.node = node

    def run(
        self,
        base_url: str,
        access_key: str,
        secret_key: str,
        *,
        ca_file: Path | None = None,
        params: Mapping[str, Any] | None = None,
        poll_ms: int = 200,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> KlingApiRun:
        """Create one text-to-video task through ``base_url`` with the package, wait for its end,
        read it once more. ``ca_file`` is trusted through ``NODE_EXTRA_CA_CERTS``; ``params`` are
        merged over run.mjs's create parameters (kling-v2-5-turbo, std, "5" s); ``env`` adds variables."""
        child = {k: v for k, v in os.environ.items() if k.lower() not in _DROPPED_ENV}
        child |= {
            "KLING_HARNESS_BASE_URL": base_url,
            "KLING_HARNESS_ACCESS_KEY": access_key,
            "KLING_HARNESS_SECRET_KEY": secret_key,
            "KLING_HARNESS_POLL_MS": str(poll_ms),
            "KLING_HARNESS_TIMEOUT_MS": str(int(timeout * 1000)),
        }
        if params is not None:
            child["KLING_HARNESS_PARAMS"] = json.dumps(dict(params))
        if ca_file is not None:
            child["NODE_EXTRA_CA_CERTS"] = str(ca_file)
        child |= dict(env or {})
        proc = subprocess.run(
            [self.node, "run.mjs"],
            cwd=self.directory,  # no .env here: the package reads one from its working directory
            env=child,
            capture_output=True,
            text=True,
            timeout=timeout + 30,  # the package retries 5001/502-504 with 2 s and 4 s pauses
            check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise AssertionError(
                f"run.mjs printed no JSON line (exit {proc.returncode})\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            ) from None
        if not isinstance(result, dict):
            raise AssertionError(f"run.mjs printed {result!r}, not a JSON object")
        return KlingApiRun(proc.returncode, result, proc.stderr)


def _digest(source: Path) -> str:
    sha = hashlib.sha256()
    for name in LOCK_FILES:
        sha.update(name.encode() + b"\0" + (source / name).read_bytes() + b"\0")
    return sha.hexdigest()


def _node_major(node: str) -> int | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20, check=True)
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def install(directory: Path) -> tuple[KlingApiNode | None, str | None]:
    """Install the client into ``directory`` (``npm ci``, skipped when the same lock file is
    already installed there). Returns the client, or ``None`` and why it could not be installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, f"{'node' if node is None else 'npm'} not found on PATH"
    major = _node_major(node)
    if major is None or major < MIN_NODE_MAJOR:
        return None, f"{node} is not Node {MIN_NODE_MAJOR}+ (found major version {major})"
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:  # two sessions sharing .pytest_cache take turns
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install(directory, node, npm)


def _install(directory: Path, node: str, npm: str) -> tuple[KlingApiNode | None, str | None]:
    for name in SOURCES:
        # replaced whole (a copy then a rename): another xdist worker may be running run.mjs
        temporary = directory / f".{name}.{os.getpid()}"
        shutil.copyfile(CLIENT_DIR / name, temporary)
        os.replace(temporary, directory / name)
    digest = _digest(CLIENT_DIR)
    marker = directory / "node_modules" / MARKER
    installed = directory / "node_modules" / "kling-api" / "package.json"
    if marker.is_file() and marker.read_text() == digest and installed.is_file():
        return KlingApiNode(directory, node), None
    try:
        proc = subprocess.run(
            [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"npm ci took more than {NPM_TIMEOUT:.0f} s (is the npm registry reachable?)"
    except OSError as exc:
        return None, f"npm ci could not start: {exc}"
    if proc.returncode != 0 or not installed.is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return None, f"npm ci failed (exit {proc.returncode}): {tail}"
    marker.write_text(digest)
    return KlingApiNode(directory, node), None


def _cache_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``.pytest_cache/d/kling-api-node`` (kept between sessions), or a session temp dir when
    the cache plugin is off (``-p no:cacheprovider``)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("kling-api-node"))
    return tmp_path_factory.mktemp("kling-api-node")


@pytest.fixture(scope="session")
def kling_api_node(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KlingApiNode]:
    """The npm package kling-api, installed once per session; see :meth:`KlingApiNode.run`."""
    client, problem = install(_cache_dir(pytestconfig, tmp_path_factory))
    if client is None:
        message = (
            f"the npm package kling-api cannot run ({problem}); install Node 20 (18 or later works) and npm "
            "(e.g. apt-get install -y nodejs npm) with the npm registry reachable once "
            "(later runs use npm's cache) to enable these tests"
        )
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    yield client
