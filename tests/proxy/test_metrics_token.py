"""``kling-cost proxy --metrics-token-env VAR``: ``/metrics`` (every budget's scope, limit and
spend) answers only a scraper with ``Authorization: Bearer <token>``; without the option it
stays open. A named variable that is unset is an error, never an open ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app as cli
from kling_cost.errors import ConfigurationError
from kling_cost.proxy.server import ProxyConfig, build_app
from tests.proxy.conftest import Proxied, make_proxied

TOKEN = "scrape-Zq9x7"


@pytest.fixture
def guarded(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:
    monkeypatch.setenv("KC_METRICS_TOKEN", f"  {TOKEN}\n")  # read from a file: whitespace around it
    with make_proxied(ledger_url, monkeypatch, metrics_token_env="KC_METRICS_TOKEN") as world:
        world.ledger.set_budget("project:secret-film", 100)
        yield world


def test_metrics_answer_only_the_bearer_of_the_token(guarded: Proxied) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ):
        page = guarded.http("GET", "/metrics", headers=headers)
        assert page.status_code == 401, headers
        assert page.headers["www-authenticate"].startswith("Bearer")
        assert "secret-film" not in page.text and TOKEN not in page.text
    page = guarded.http("GET", "/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert page.status_code == 200
    assert 'scope="project:secret-film"' in page.text
    # a virtual key is not the scraper's token
    key = guarded.key("alice")
    assert guarded.http("GET", "/metrics", key).status_code == 401
    assert guarded.http("GET", "/healthz").status_code == 200  # the probes stay open


def test_without_the_option_metrics_stay_open(proxied: Proxied) -> None:
    proxied.ledger.set_budget("project:film", 100)
    page = proxied.http("GET", "/metrics")
    assert page.status_code == 200 and 'scope="project:film"' in page.text


def _refused(ledger_url: str) -> str:
    """What ``build_app`` and ``kling-cost proxy`` say of ``--metrics-token-env KC_METRICS_TOKEN``
    as the environment stands: both refuse (the CLI with one line, non-zero)."""
    config = ProxyConfig(
        upstream="http://127.0.0.1:9", ledger=ledger_url, metrics_token_env="KC_METRICS_TOKEN"
    )
    with pytest.raises(ConfigurationError, match="KC_METRICS_TOKEN"):
        build_app(config)
    result = CliRunner().invoke(
        cli, ["proxy", "--ledger", ledger_url, "--metrics-token-env", "KC_METRICS_TOKEN"]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_named_variable_that_is_unset_is_an_error_not_an_open_page(
    ledger_url: str,
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
) -> None:
    if value is None:
        monkeypatch.delenv("KC_METRICS_TOKEN", raising=False)
    else:
        monkeypatch.setenv("KC_METRICS_TOKEN", value)
    output = _refused(ledger_url)
    assert "--metrics-token-env KC_METRICS_TOKEN: that environment variable is not set" in output


def test_an_empty_variable_name_is_one_line_before_listening(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `--metrics-token-env "$NAME"` with NAME unset in the shell: the name is ""; it was let
    # through the CLI's check, and every worker then failed in build_app (with --workers N a
    # traceback per worker, respawned forever, the port listening)
    monkeypatch.delenv("KLING_COST_MASTER_KEY", raising=False)
    monkeypatch.setenv("KLING_COST_MASTER_KEY_FILE", str(tmp_path / "no-key"))
    result = CliRunner().invoke(
        cli, ["proxy", "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--metrics-token-env", ""]
    )
    assert result.exit_code != 0
    assert "--metrics-token-env needs the name of an environment variable" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("token", ["tök-én", "s3cret\u00a0tail"])
def test_a_non_ascii_token_is_matched_byte_for_byte(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    # a scraper sends the token's UTF-8 bytes (curl, Prometheus' credentials_file); Starlette
    # decodes header bytes as latin-1, so comparing its UTF-8 re-encoding never matched
    monkeypatch.setenv("KC_METRICS_TOKEN", token)
    with make_proxied(ledger_url, monkeypatch, metrics_token_env="KC_METRICS_TOKEN") as world:
        sent = b"Bearer " + token.encode()
        assert world.http("GET", "/metrics", headers={"Authorization": sent}).status_code == 200
        wrong = b"Bearer " + token.encode()[:-1]
        assert world.http("GET", "/metrics", headers={"Authorization": wrong}).status_code == 401
        latin = b"Bearer " + token.encode("latin-1")
        assert world.http("GET", "/metrics", headers={"Authorization": latin}).status_code == 401


@pytest.mark.parametrize("value", ["line-one\nline-two", "tok\ren", "tok\x7fen"])
def test_a_token_no_header_can_carry_is_an_error(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # a file of two lines read into the variable: no scraper could ever send it
    monkeypatch.setenv("KC_METRICS_TOKEN", value)
    output = _refused(ledger_url)
    assert "KC_METRICS_TOKEN" in output and value not in output


def test_the_settings_never_show_their_secrets() -> None:
    from kling_cost.proxy.service import ProxySettings

    shown = repr(ProxySettings(callback_secret="whsec-Qx81", metrics_token=TOKEN))
    assert "whsec-Qx81" not in shown and TOKEN not in shown
