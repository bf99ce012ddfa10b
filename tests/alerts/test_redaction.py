"""Sink credentials stay in the sink: never in the alerts table, logs, /api/alerts or `alerts list`."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from typer.testing import CliRunner

from kling_cost import ConfigurationError
from kling_cost.alerts import Backoff, Deliverer, sink_from_url
from kling_cost.alerts.redact import Scrubber, public_alert, scrub_urls, transport_reason
from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from kling_cost.web import create_dashboard_app
from tests.alerts.conftest import Hook, Mailbox
from tests.helpers import FakeClock
from tests.servers import free_port
from tests.web.conftest import serving

TOKEN = "Tok3nS3cretXYZ42"
PASSWORD = "pa55-Word-S3cret"


def sink_urls(hook: Hook, mailbox: Mailbox, dead_port: int) -> list[str]:
    base = hook.url.removesuffix("/hook")
    return [
        f"{base}/api/webhooks/123/{TOKEN}?token=t{TOKEN}&api_key=a{TOKEN}&key=k{TOKEN}&secret=s{TOKEN}",
        f"slack+{base}/services/T000/B000/{TOKEN}",
        f"smtp://alerts:{PASSWORD}@127.0.0.1:{mailbox.port}?to=ops@example.com",  # no AUTH there
        f"http://user:{PASSWORD}@127.0.0.1:{dead_port}/hook/{TOKEN}?password={PASSWORD}",  # nobody listens
    ]


def leaks(text: str) -> list[str]:
    return [s for s in (TOKEN, PASSWORD, "/api/webhooks", "/services/T000", "receiver down") if s in text]


def test_no_token_or_password_reaches_the_table_the_api_the_cli_or_the_logs(
    ledger_url: str, hook: Hook, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    hook.fail, hook.echo = 2, True  # the first webhook and Slack posts get a 500 echoing the path
    clock = FakeClock()
    caplog.set_level(logging.DEBUG)
    urls = sink_urls(hook, mailbox, free_port())
    with open_ledger(ledger_url, clock=clock) as led:
        led.set_budget("project:film", 10, thresholds=["0.5"])
        led.reserve(6, ["project:film"])
        deliverer = Deliverer(led, urls, backoff=Backoff.none())
        try:
            assert [s.name for s in deliverer.sinks] == [
                f"webhook:{hook.url.removesuffix('/hook')}",
                f"slack:{hook.url.removesuffix('/hook')}",
                f"email:smtp://127.0.0.1:{mailbox.port}",
                f"webhook:http://127.0.0.1:{urls[3].split(':')[3].split('/')[0]}",
            ]
            first = deliverer.deliver_pending()
            assert first.failed == 1 and len(hook.requests) == 2
            assert f"/api/webhooks/123/{TOKEN}" in hook.paths[0]  # the sink did use its URL
            [alert] = led.alerts()
            error = alert.last_error or ""
            assert "HTTP 500 Internal Server Error" in error and "connection refused" in error
            assert "does not support" in error and not leaks(error), error
            second = deliverer.deliver_pending()  # webhook and Slack accept now; the rest fail again
            assert second.failed == 1 and len(hook.accepted) == 2
            [alert] = led.alerts()
            assert sorted(alert.sent_to) == sorted(f"alert:{s.name}" for s in deliverer.sinks[:2])
            errors = first.errors + second.errors
            assert not leaks(" ".join(errors)), errors
            deliverer.start(interval=0.02)  # the background loop logs each failed pass
            deadline = time.monotonic() + 10
            while "alert delivery:" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            deliverer.close()
        assert "alert delivery:" in caplog.text and not leaks(caplog.text), caplog.text
        origin = hook.url.removesuffix("/hook")
        assert f'HTTP Request: POST {origin} "HTTP/1.0 500' in caplog.text  # httpx's log, shortened

        with led.transaction() as cur:  # every column of every row of the outbox
            cur.execute("SELECT * FROM alerts")
            rows = repr(cur.fetchall())
        assert TOKEN not in rows and PASSWORD not in rows and not leaks(rows), rows

        with serving(create_dashboard_app(led)) as base:
            served = httpx.get(f"{base}/api/alerts").text
        assert "connection refused" in served and not leaks(served), served

    runner = CliRunner()
    for args in (("alerts", "list"), ("alerts", "list", "--json")):
        result = runner.invoke(app, [*args, "--ledger", ledger_url], env={"COLUMNS": "250"})
        assert result.exit_code == 0 and "project:film" in result.stdout
        assert not leaks(result.stdout + result.stderr), result.stdout
    result = runner.invoke(
        app, ["alerts", "deliver", "--ledger", ledger_url, *[a for u in urls for a in ("--sink", u)]]
    )
    assert result.exit_code == 1 and "connection refused" in result.stdout
    assert not leaks(result.stdout + result.stderr), result.stdout
    result = runner.invoke(app, ["alerts", "test", urls[3]])
    assert result.exit_code == 1 and "did not accept" in result.stderr
    assert not leaks(result.stdout + result.stderr), result.stderr


def test_names_reprs_and_configuration_errors_hide_the_secret_parts() -> None:
    urls = {
        f"https://discord.example/api/webhooks/123/{TOKEN}": "webhook:https://discord.example",
        f"https://hooks.example.com/x?token={TOKEN}&api_key={TOKEN}&key={TOKEN}&secret=whsec_c2VjcmV0": (
            "webhook:https://hooks.example.com"
        ),
        f"https://hooks.slack.com/services/T000/B000/{TOKEN}": "slack:https://hooks.slack.com",
        f"slack://T000/B000/{TOKEN}": "slack:https://hooks.slack.com",
        f"smtps://me:{PASSWORD}@mail.example.com?to=a@b.c": "email:smtps://mail.example.com:465",
        f"apprise://json://127.0.0.1:9/hook/{TOKEN}": "apprise:json",
    }
    for url, name in urls.items():
        sink = sink_from_url(url)
        assert sink.name == name and TOKEN not in repr(sink) and PASSWORD not in repr(sink)
    for bad in (
        f"https://x.example/api/webhooks/1/{TOKEN}?secret=whsec_%%%",
        f"https://x.example:99999/{TOKEN}",
        f"smtp://u:{PASSWORD}@mail.example.com?to=nobody",
        f"smtp://u:{PASSWORD}@mail.example.com?to=a@b.c&bogus={TOKEN}",
        f"ftp://u:{PASSWORD}@x.example/{TOKEN}",
    ):
        with pytest.raises(ConfigurationError) as caught:
            sink_from_url(bad)
        assert not leaks(str(caught.value)), str(caught.value)


def test_two_destinations_on_one_host_are_told_apart_and_one_twice_is_refused() -> None:
    from kling_cost.alerts.sinks import make_sinks

    first, second = (
        "https://hooks.slack.com/services/T/B/one1111",
        "https://hooks.slack.com/services/T/B/two2222",
    )
    names = [s.name for s in make_sinks([first, second, "slack://T/B/three33"])]
    assert names == [
        "slack:https://hooks.slack.com",
        "slack:https://hooks.slack.com#2",
        "slack:https://hooks.slack.com#3",
    ]
    with pytest.raises(ConfigurationError, match="configured twice") as caught:
        make_sinks([first, first])
    assert "one1111" not in str(caught.value)


def test_scrubbing_helpers() -> None:
    assert scrub_urls(
        f"failed: https://u:{PASSWORD}@h.example:8443/a/{TOKEN}?k=v and smtp://x@m.example"
    ) == ("failed: https://h.example:8443 and smtp://m.example")
    scrub = Scrubber([f"https://h.example/p/{TOKEN}?token=abcdef"], [PASSWORD])
    assert scrub(f"{TOKEN} abcdef {PASSWORD}") == "*** *** ***"
    old = {
        "last_error": f"https://h.example/p/{TOKEN}: HTTP 500",
        "sent_to": [f"alert:https://h.example/{TOKEN}"],
    }
    assert json.dumps(public_alert(old)).count(TOKEN) == 0
    with pytest.raises(httpx.ConnectError) as caught:
        httpx.post(f"http://127.0.0.1:{free_port()}/x/{TOKEN}")
    assert transport_reason(caught.value) == "connection refused"
