"""The Host rule over real HTTP: DNS rebinding gets nothing (421), the dashboard's own names work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_cost import ConfigurationError
from kling_cost.ledger import open_ledger
from kling_cost.web import create_dashboard_app
from kling_cost.web.access import host_name, normalise_host
from tests.helpers import FakeClock
from tests.web.conftest import free_port, seed

PATHS = ("/", "/api/overview", "/api/budgets", "/api/alerts", "/api/charges", "/static/plotly.min.js")
SECRET_BITS = ("project:film", "red fox", "key:alice", "budgets", "alerts")


def raw_get(base: str, path: str, host: str | None) -> tuple[int, bytes]:
    """One HTTP/1.0 request with exactly the Host header given (or none)."""
    port = int(base.rsplit(":", 1)[1])
    lines = [f"GET {path} HTTP/1.0"] + ([f"Host: {host}"] if host is not None else [])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_foreign_host_gets_421_and_no_data(ledger_url: str, serve: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    with open_ledger(ledger_url, clock=clock) as ledger:
        seed(ledger, clock)
        with serve(create_dashboard_app(ledger)) as base:
            for host in ("evil.example", "evil.example:8787", "127.0.0.1.evil.example", "localhost.evil"):
                for path in PATHS:
                    got = httpx.get(base + path, headers={"Host": host})
                    assert got.status_code == 421, (host, path, got.status_code)
                    assert not any(bit in got.text for bit in SECRET_BITS), got.text
                    assert "not a name of this dashboard" in got.json()["error"]
            port = base.rsplit(":", 1)[1]
            for host in (
                "localhost",
                f"localhost:{port}",
                f"127.0.0.1:{port}",
                "127.0.0.2",
                "[::1]:9",
                "LOCALHOST",
            ):
                got = httpx.get(f"{base}/api/budgets", headers={"Host": host})
                assert got.status_code == 200 and got.json()["budgets"], host
            status, body = raw_get(base, "/api/budgets", None)  # HTTP/1.0 without a Host header
            assert status == 400 and b"project:film" not in body
            status, body = raw_get(base, "/api/budgets", "evil.example")
            assert status == 421 and b"project:film" not in body


def test_allowed_hosts_and_the_bound_address(ledger_url: str, serve: Callable[[Any], Any]) -> None:
    clock = FakeClock()
    with open_ledger(ledger_url, clock=clock) as ledger:
        seed(ledger, clock)
        app = create_dashboard_app(ledger, allowed_hosts=["Dash.Example.com", "::1"])
        with serve(app) as base:
            assert (
                httpx.get(f"{base}/api/budgets", headers={"Host": "dash.example.com:443"}).status_code == 200
            )
            assert httpx.get(f"{base}/api/budgets", headers={"Host": "other.example.com"}).status_code == 421
        # bound elsewhere with a token: the token is not enough when the Host is foreign
        app = create_dashboard_app(ledger, token="s3cret", bound_host="10.1.2.3")
        auth = {"Authorization": "Bearer s3cret"}
        with serve(app) as base:
            assert (
                httpx.get(f"{base}/api/budgets", headers={**auth, "Host": "10.1.2.3:8787"}).status_code == 200
            )
            assert (
                httpx.get(f"{base}/api/budgets", headers={**auth, "Host": "evil.example"}).status_code == 421
            )
            assert httpx.get(f"{base}/api/budgets", headers={"Host": "10.1.2.3"}).status_code == 401
        app = create_dashboard_app(ledger, token="s3cret", bound_host="0.0.0.0")
        with serve(app) as base:  # a wildcard is no name: only loopback and --allowed-host
            assert httpx.get(f"{base}/api/budgets", headers={**auth, "Host": "0.0.0.0"}).status_code == 421
            assert (
                httpx.get(f"{base}/api/budgets", headers={**auth, "Host": "192.168.1.5"}).status_code == 421
            )


def test_host_names_are_parsed_strictly() -> None:
    assert host_name("LocalHost:8787") == "localhost"
    assert host_name("[::1]:80") == "[::1]"
    for bad in (None, "", "a b", "host:port", "[::1", "x:1:2", "évil.example", "a/b", "user@host"):
        assert host_name(bad) is None, bad
    assert normalise_host("::1") == "[::1]" and normalise_host(" Dash.example.COM ") == "dash.example.com"
    for bad in ("http://x", "x:8787", "a/b", "", "two words"):
        with pytest.raises(ConfigurationError, match="not a host name"):
            normalise_host(bad)


def test_serve_allowed_host_flag_end_to_end(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    clock = FakeClock()
    with open_ledger(url, clock=clock) as ledger:
        seed(ledger, clock)
    port = free_port()
    env = {**os.environ, "COLUMNS": "200"}
    args = ["serve", "--port", str(port), "--allowed-host", "dash.local", "--ledger", url]
    with subprocess.Popen(
        [sys.executable, "-m", "kling_cost", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as proc:
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(base + "/api/budgets", timeout=1)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                    time.sleep(0.1)
            assert httpx.get(base + "/api/budgets", headers={"Host": f"dash.local:{port}"}).status_code == 200
            assert httpx.get(base + "/api/budgets", headers={"Host": "evil.example"}).status_code == 421
        finally:
            proc.terminate()
            proc.communicate(timeout=20)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "kling_cost",
            "serve",
            "--port",
            "0",
            "--allowed-host",
            "http://x",
            "--ledger",
            url,
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: allowed host") and bad.stdout == ""
