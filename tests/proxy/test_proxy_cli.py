"""``kling-cost proxy`` refusing bad options in one line before it listens (outside review)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.kling.auth import JWTAuth
from kling_cost.ledger import open_ledger
from kling_cost.proxy.keys import Keys, MasterKey
from kling_cost.simulator import create_app
from tests.proxy.test_proxy_processes import _started
from tests.servers import AK, API_KEY, SK, free_port, serve
from tests.tls import make_tls

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("KLING_API_KEY", "k")
    monkeypatch.setenv("KLING_COST_MASTER_KEY", "m" * 40)
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.mark.parametrize("problem", ["missing", "not-pem", "key-mismatch"])
def test_bad_tls_files_are_one_line_before_listening(env: str, tmp_path: Path, problem: str) -> None:
    """A missing or unreadable --ssl-certfile/--ssl-keyfile printed "kling-cost proxy on
    https://..." and then "internal error: FileNotFoundError" (or an SSLError)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if problem == "not-pem":
        cert.write_text("not a certificate\n")
        key.write_text("not a key\n")
    elif problem == "key-mismatch":  # a real certificate with another certificate's key
        cert, key = make_tls(tmp_path / "one").cert, make_tls(tmp_path / "two").key
    port = str(free_port())
    args = ["proxy", "--ledger", env, "--port", port, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "proxy on" not in result.stdout
    err = result.stderr.strip()
    assert err.startswith("error: --ssl-") and len(err.splitlines()) == 1, err


def test_no_master_key_is_one_line_and_makes_none(
    env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The proxy made a new master key when it found none: every key made with the real one
    then failed its JWT checks (1002) with nothing to say why."""
    monkeypatch.delenv("KLING_COST_MASTER_KEY")
    monkeypatch.delenv("KLING_COST_MASTER_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    result = runner.invoke(app, ["proxy", "--ledger", env, "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: no master key") and len(err.splitlines()) == 1, err
    assert "proxy on" not in result.stdout
    assert not (tmp_path / "config").exists()


def test_missing_credentials_name_the_proxys_own_option(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLING_API_KEY")
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["proxy", "--ledger", env, "--port", str(free_port())])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert (
        "--upstream http://127.0.0.1:8790" in err and "--base-url" not in err and len(err.splitlines()) == 1
    )


def test_a_bad_log_level_is_one_line_before_listening(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_COST_LOG_LEVEL", "chatty")
    result = runner.invoke(app, ["proxy", "--ledger", env, "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: KLING_COST_LOG_LEVEL") and len(err.splitlines()) == 1, err
    assert "proxy on" not in result.stdout


def test_the_access_log_is_written_and_never_holds_a_secret(tmp_path: Path) -> None:
    """At KLING_COST_LOG_LEVEL=info the README promises one access line per request: nothing
    was printed (the logger had no handler). Neither it nor /metrics may show a credential."""
    master = "access-log-master-key-0123456789abcdefgh"
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    issued = Keys(ledger, MasterKey(master.encode(), "test")).create("logged")
    ledger.close()
    sim = create_app(AK, SK, api_key=API_KEY, task_seconds=60, failure_rate=0)
    jwt = JWTAuth(issued.access_key, issued.secret_key).authorization()
    secrets = [master, AK, SK, API_KEY, issued.api_key, issued.secret_key, issued.webhook_secret]
    secrets.append(jwt.split()[-1])
    log = tmp_path / "proxy.log"
    env = {
        **os.environ,
        "KLING_ACCESS_KEY": AK,
        "KLING_SECRET_KEY": SK,
        "KLING_API_KEY": API_KEY,
        "KLING_COST_MASTER_KEY": master,
        "KLING_COST_LOG_LEVEL": "info",
    }
    with serve(sim) as kling, log.open("wb") as out:
        args = [
            sys.executable,
            "-m",
            "kling_cost",
            "proxy",
            "--upstream",
            kling,
            "--ledger",
            url,
            "--port",
            "0",
        ]
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = _started(log, proc)
            bearer = {"Authorization": f"Bearer {issued.api_key}"}
            body = {"model_name": "kling-v2-6", "mode": "std", "duration": "5", "prompt": "a red fox"}
            assert httpx.post(f"{base}/v1/videos/text2video", json=body, headers=bearer).status_code == 200
            httpx.get(
                f"{base}/v1/videos/text2video",
                params={"token": issued.api_key},
                headers={"Authorization": jwt},
            )
            httpx.get(f"{base}/v1/videos/text2video/{issued.api_key}", headers={"Authorization": jwt})
            httpx.get(f"{base}/tasks", headers={"Authorization": f"Bearer {issued.secret_key}"})
            metrics = httpx.get(f"{base}/metrics").text
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    text = log.read_text(errors="replace")
    assert "POST /v1/videos/text2video 200 key=logged" in text, text
    assert "GET /tasks 401 key=- refused=auth" in text, text
    for secret in secrets:
        assert secret not in text and secret not in metrics
