"""``kling-cost proxy`` refusing bad options in one line before it listens (outside review)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from tests.servers import free_port
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
