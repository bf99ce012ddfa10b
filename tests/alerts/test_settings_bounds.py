"""Alert settings that are not finite numbers, and per-sink URL options (found by an outside
review): refused when configured, never a busy loop, a crash at the first alert or an option
silently ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost import AuthError, ConfigurationError
from kling_cost.alerts import AlertsConfig, Backoff, Deliverer, load_config, sample_message, sink_from_url
from kling_cost.cli import app
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.signing import verify_webhook
from tests.alerts.conftest import Hook
from tests.ledger.conftest import clock, ledger, ledger_url

__all__ = ["clock", "ledger", "ledger_url"]

NOT_FINITE = ["nan", "inf", "-inf", "1e400"]


@pytest.mark.parametrize("setting", ["interval", "lease", "timeout", "retry_base", "retry_max"])
@pytest.mark.parametrize("value", NOT_FINITE)
def test_config_seconds_must_be_finite(tmp_path: Path, setting: str, value: str) -> None:
    file = tmp_path / "alerts.toml"
    file.write_text(f"[alerts]\n{setting} = {value}\n")
    with pytest.raises(ConfigurationError, match=setting):
        load_config(file)


@pytest.mark.parametrize("value", NOT_FINITE)
def test_config_retry_factor_must_be_finite(tmp_path: Path, value: str) -> None:
    file = tmp_path / "alerts.toml"
    file.write_text(f"[alerts]\nretry_factor = {value}\n")
    with pytest.raises(ConfigurationError, match="retry_factor"):
        load_config(file)


def test_backoff_refuses_a_factor_that_is_not_finite() -> None:
    for factor in (float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="factor"):
            Backoff(timedelta(seconds=5), factor, timedelta(hours=1))


def test_a_background_deliverer_refuses_an_interval_that_is_not_finite(ledger: Ledger) -> None:
    deliverer = Deliverer(ledger, [])
    try:
        for interval in (float("nan"), float("inf")):
            with pytest.raises(ConfigurationError, match="interval"):
                deliverer.start(interval)
        assert deliverer._thread is None  # nothing started
    finally:
        deliverer.close()


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1", "0"])
def test_alerts_deliver_loop_refuses_an_interval_that_is_not_a_finite_positive_number(
    ledger_url: str, value: str
) -> None:
    open_ledger(ledger_url).close()
    # Before the fix, nan was accepted and every pass ran at once: a busy loop on the ledger.
    done = subprocess.run(
        [sys.executable, "-m", "kling_cost", "alerts", "deliver", "--loop", "--interval", value],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "KLING_COST_LEDGER": ledger_url},
    )
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: ") and "--interval" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "0", "601"])
def test_a_webhook_url_timeout_is_checked_even_with_a_configured_timeout(value: str) -> None:
    url = f"https://hooks.example.com/x?timeout={value}"
    with pytest.raises(ConfigurationError, match="timeout"):
        sink_from_url(url, timeout=10)
    with pytest.raises(ConfigurationError, match="timeout"):
        AlertsConfig(sinks=(url,))


def test_a_sink_urls_own_timeout_wins_over_the_configured_default() -> None:
    sink = sink_from_url("https://hooks.example.com/x?timeout=3", timeout=10)
    assert sink.timeout == 3  # type: ignore[attr-defined]
    config = AlertsConfig(sinks=("https://hooks.example.com/y?timeout=2.5", "https://hooks.example.com/z"))
    assert [s.timeout for s in config.build_sinks()] == [2.5, 10.0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["nan", "inf", "abc", "0"])
def test_an_email_url_timeout_is_checked_when_configured(value: str) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        sink_from_url(f"smtps://u:p@mail.example.com:465?to=a@b.c&timeout={value}")


@pytest.mark.parametrize(
    "url",
    ["https://[::1/api/webhooks/1/SECRETTOKEN", "slack+https://[::1/services/T/B/SECRETTOKEN"],
)
def test_a_malformed_sink_url_is_a_configuration_error_without_its_secret(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sink_from_url(url)
    assert "SECRETTOKEN" not in str(info.value)
    result = CliRunner().invoke(app, ["alerts", "test", url])
    assert result.exit_code == 2 and "SECRETTOKEN" not in result.output, result.output
    assert result.stderr.startswith("error: ") and "internal error" not in result.stderr


@pytest.mark.parametrize(
    "url", ["stderr://SECRETTOKEN", "stderr:///SECRETTOKEN", "log://x?token=SECRETTOKEN"]
)
def test_configuration_errors_of_log_sinks_do_not_echo_the_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sink_from_url(url)
    assert "SECRETTOKEN" not in str(info.value)


def test_a_sink_urls_own_secret_wins_over_the_configured_webhook_secret(hook: Hook) -> None:
    # Before: the configured webhook_secret signed a URL that carries its own ?secret=, so the
    # receiver refused every alert and it stayed pending forever.
    own, shared = "whsec_b3duLXNlY3JldC1vZi10aGlzLWhvb2s=", "whsec_c2hhcmVkLXNlY3JldA=="
    config = AlertsConfig(sinks=(f"{hook.url}?secret={own}", f"{hook.url}?x=2"), webhook_secret=shared)
    first, second = config.build_sinks()
    message = sample_message(None)
    for sink in (first, second):
        sink.send(message)
        sink.close()
    (h1, b1), (h2, b2) = hook.accepted
    assert verify_webhook(own, h1, b1) is None
    assert verify_webhook(shared, h2, b2) is None
    with pytest.raises(AuthError):
        verify_webhook(shared, h1, b1)


def test_an_apprise_failure_is_a_reason_not_a_log_line() -> None:
    sink = sink_from_url("apprise://json://127.0.0.1:9/hook/SECRETTOKEN")
    with pytest.raises(Exception) as info:
        sink.send(sample_message(None))
    text = str(info.value)
    assert text.startswith("apprise:json: ") and "SECRETTOKEN" not in text
    reason = text.removeprefix("apprise:json: ")
    assert not reason[:4].isdigit() and " - WARNING - " not in reason, reason


def test_a_configuration_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """(Found by review: a UnicodeDecodeError, "internal error" at the CLI.)"""
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe[alerts]\n")
    with pytest.raises(ConfigurationError, match=r"c\.toml: not valid TOML: it is not UTF-8 text"):
        load_config(path)
