"""Delivery with real peers: a webhook receiver on loopback, an SMTP server, Apprise, callbacks."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest

from kling_cost import AuthError, ConfigurationError
from kling_cost.alerts import (
    AlertMessage,
    AlertsConfig,
    Backoff,
    CallbackSink,
    Deliverer,
    load_config,
    sink_from_url,
)
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.signing import verify_webhook
from tests.alerts.conftest import Hook, Mailbox
from tests.helpers import FakeClock

SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="


def test_webhook_fails_three_times_then_arrives_once_signed_across_a_restart(
    ledger_url: str, clock: FakeClock, hook: Hook
) -> None:
    hook.fail = 3
    backoff = Backoff(timedelta(seconds=10), 2.0, timedelta(minutes=5))
    sinks = [f"{hook.url}?secret={SECRET}"]
    led = open_ledger(ledger_url, clock=clock)
    led.set_budget("project:film", 100, thresholds=["0.8"])
    led.reserve(80, ["project:film"], metadata={"model": "kling-v2-6", "mode": "pro"})
    deliverer = Deliverer(led, sinks, backoff=backoff, dashboard_url="http://dash.local/?scope={scope}")
    assert deliverer.deliver_pending().failed == 1  # attempt 1: 500
    assert deliverer.deliver_pending().claimed == 0  # not due before its backoff
    clock.advance(seconds=10)
    assert deliverer.deliver_pending().failed == 1  # attempt 2
    [alert] = led.alerts()
    assert (alert.status, alert.attempts) == ("pending", 2)
    assert alert.last_error is not None and "HTTP 500" in alert.last_error and SECRET not in alert.last_error
    assert alert.next_attempt_at == clock() + timedelta(seconds=20)

    deliverer.close()  # the process stops ...
    led.close()
    led = open_ledger(ledger_url, clock=clock)  # ... and a new one starts with nothing in memory
    deliverer = Deliverer(led, sinks, backoff=backoff, dashboard_url="http://dash.local/?scope={scope}")
    try:
        clock.advance(seconds=20)
        assert deliverer.deliver_pending().failed == 1  # attempt 3
        clock.advance(seconds=39)
        assert deliverer.deliver_pending().claimed == 0
        clock.advance(seconds=1)
        report = deliverer.deliver_pending()  # attempt 4
        delivered_when = clock()
        assert (report.delivered, report.failed) == (1, 0)
        for _ in range(3):
            clock.advance(minutes=10)
            assert deliverer.deliver_pending().claimed == 0
    finally:
        deliverer.close()
    assert [code for _, _, code in hook.requests] == [500, 500, 500, 200]
    ids = {headers["webhook-id"] for headers, _, _ in hook.requests}
    assert len(ids) == 1  # the same message id on every attempt: receivers can de-duplicate
    [(headers, body)] = hook.accepted
    verify_webhook(SECRET, headers, body)
    with pytest.raises(AuthError):
        verify_webhook("whsec_" + "b3RoZXI=", headers, body)
    payload = json.loads(body)
    assert payload["type"] == "kling_cost.alert"
    data = payload["data"]
    assert (data["scope"], data["window"], data["threshold"], data["level"], data["limit"]) == (
        "project:film",
        "day",
        "0.8",
        "80.000",
        "100.000",
    )
    assert (
        data["remaining"] == "20.000" and data["dashboard_url"] == "http://dash.local/?scope=project%3Afilm"
    )
    [row] = led.alerts()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 4, None)
    assert row.delivered_at == delivered_when
    led.close()


def test_a_deliverer_that_dies_mid_send_leaves_the_alert_due_after_its_lease(
    ledger: Ledger, clock: FakeClock
) -> None:
    ledger.set_budget("account", 10, thresholds=["0.5"])
    ledger.reserve(5)
    _token, claimed = ledger.outbox.claim(clock(), timedelta(minutes=2), 10)
    assert len(claimed) == 1  # ... and the process dies before sending
    got: list[AlertMessage] = []
    other = Deliverer(ledger, [got.append], backoff=Backoff.none())
    assert other.deliver_pending().claimed == 0  # still leased to the dead one
    clock.advance(minutes=2)
    assert other.deliver_pending().delivered == 1
    assert len(got) == 1 and ledger.alerts()[0].attempts == 2


def test_only_the_sinks_that_failed_get_the_retry(ledger: Ledger) -> None:
    good: list[AlertMessage] = []
    calls = {"flaky": 0}

    def flaky(message: AlertMessage) -> None:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("pager unreachable")

    ledger.set_budget("account", 10, thresholds=["1"])
    ledger.reserve(10)
    deliverer = Deliverer(ledger, [CallbackSink(good.append, name="good"), CallbackSink(flaky, name="pager")])
    deliverer.backoff = Backoff.none()
    first = deliverer.deliver_pending()
    assert first.failed == 1 and "callback:pager: pager unreachable" in first.errors[0]
    [alert] = ledger.alerts()
    assert alert.status == "pending" and alert.sent_to == ("alert:callback:good",)
    deliverer.deliver_pending()
    assert deliverer.deliver_pending().delivered == 1
    assert len(good) == 1 and calls["flaky"] == 3
    assert ledger.alerts()[0].status == "delivered"


def test_a_failing_sink_never_blocks_a_reservation(ledger: Ledger) -> None:
    gate = threading.Event()
    arrived = threading.Event()

    def stuck(message: AlertMessage) -> None:
        arrived.set()
        gate.wait(10)  # a receiver that hangs

    ledger.set_budget("account", 100)
    deliverer = Deliverer(ledger, [stuck], backoff=Backoff.none()).start(interval=30)
    try:
        ledger.reserve(60)  # crosses 50 %: wakes the background deliverer
        assert arrived.wait(5)  # it was woken by the commit, not by its 30 s interval
        started = time.monotonic()
        for _ in range(10):
            ledger.commit(ledger.reserve(1), 1)
        ledger.reserve(15)  # crosses 80 % while the sink still hangs
        assert time.monotonic() - started < 2
    finally:
        gate.set()
        deliverer.close()
    assert {a.threshold for a in ledger.alerts()} == {"0.5", "0.8"}


def test_inline_delivery_happens_right_after_the_transaction(ledger: Ledger) -> None:
    got: list[str] = []
    deliverer = Deliverer(ledger, [CallbackSink(got.append, text=True)]).attach(inline=True)
    try:
        ledger.set_budget("project:film", 10, thresholds=["0.5"])
        ledger.reserve(5, ["project:film"])
        assert got == [
            "project:film day budget (2026-06-15) reached 50% of its limit: 5 of 10 units used or reserved, "
            "5 units remaining"
        ]
        ledger.set_budget("project:film", 20)  # the raised limit clears it: "resolved" follows inline
        assert got[-1].startswith("Resolved: the 50% alert of the project:film day budget")
        assert got[-1].endswith("the limit was raised from 10 to 20 units")
    finally:
        deliverer.close()
    assert ledger.outbox.listeners == []


def test_the_seeds_on_alert_override_keeps_working(ledger: Ledger) -> None:
    class BudgetGuard:
        def __init__(self) -> None:
            self.alerts: list[str] = []

        def _on_alert(self, message: str) -> None:
            self.alerts.append(f"ALERT: {message}")

    guard = BudgetGuard()
    ledger.set_budget("account", 1000, thresholds=["0.8"])
    with Deliverer(ledger, [CallbackSink(guard._on_alert, text=True, resolved=False)]) as deliverer:
        ledger.reserve(850)
        deliverer.deliver_pending()
        ledger.set_budget("account", 2000)
        assert deliverer.deliver_pending().resolved == 0
    assert guard.alerts == [
        "ALERT: account day budget (2026-06-15) reached 80% of its limit: 850 of 1000 units used or reserved, "
        "150 units remaining"
    ]
    assert ledger.alerts()[0].resolved_status == "skipped"


def test_email_arrives_at_a_real_smtp_server(ledger: Ledger, mailbox: Mailbox) -> None:
    url = f"smtp://127.0.0.1:{mailbox.port}?to=ops@example.com,cfo@example.com&from=alerts@example.com"
    ledger.set_budget("project:film", 200, thresholds=["0.8"])
    ledger.commit(
        ledger.reserve(100, ["project:film", "key:alice"], metadata={"model": "kling-v2-6", "mode": "pro"}),
        100,
    )
    ledger.commit(
        ledger.reserve(70, ["project:film", "key:bob"], metadata={"model": "kling-v1-6", "mode": "std"})
    )
    with Deliverer(ledger, [url], dashboard_url="http://127.0.0.1:8787/") as deliverer:
        assert deliverer.deliver_pending().delivered == 1
    mailbox.wait_for(1)
    [(sender, recipients, mail)] = mailbox.messages
    assert sender == "alerts@example.com" and recipients == ["ops@example.com", "cfo@example.com"]
    assert mail["Subject"] == "[kling-cost] project:film day budget at 80% (170 / 200 units)"
    body = mail.get_content()
    assert "project:film day budget (2026-06-15) reached 80% of its limit: 170 of 200" in body
    assert "Remaining:  30 units" in body
    assert "100 units  model/mode kling-v2-6/pro (1 generation)" in body
    assert "70 units  model/mode kling-v1-6/std (1 generation)" in body
    assert "100 units  scope key:alice" in body and "70 units  scope key:bob" in body
    assert "Dashboard:  http://127.0.0.1:8787/" in body


def test_an_unreachable_smtp_server_keeps_the_alert_pending(ledger: Ledger, mailbox: Mailbox) -> None:
    from tests.servers import free_port

    ledger.set_budget("account", 10, thresholds=["0.5"])
    ledger.reserve(5)
    port = free_port()
    with Deliverer(ledger, [f"smtp://127.0.0.1:{port}?to=a@b.c&timeout=2"]) as deliverer:
        report = deliverer.deliver_pending()
    assert report.failed == 1 and report.errors[0].endswith(
        "smtp://127.0.0.1:" + str(port) + ": connection refused"
    )
    assert ledger.alerts()[0].status == "pending"


def test_slack_gets_its_message_format(ledger: Ledger, hook: Hook) -> None:
    ledger.set_budget("account", 10, thresholds=["1"])
    ledger.reserve(10)
    slack = "slack+" + hook.url
    with Deliverer(ledger, [slack], dashboard_url="https://dash.example/") as deliverer:
        deliverer.deliver_pending()
        ledger.set_budget("account", 50)
        deliverer.deliver_pending()
    alert, resolved = hook.json()
    assert alert["text"].startswith("account day budget (2026-06-15) reached 100% of its limit")
    kinds = [b["type"] for b in alert["blocks"]]
    assert kinds == ["header", "section", "section", "actions"]
    assert alert["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "account day budget at 100% (10 / 10 units)",
    }
    assert alert["blocks"][3]["elements"][0]["url"] == "https://dash.example/"
    assert resolved["text"].startswith("Resolved: the 100% alert") and ":white_check_mark:" in json.dumps(
        resolved
    )


def test_apprise_urls_go_through_apprise(ledger: Ledger, hook: Hook) -> None:
    target = hook.url.replace("http://", "json://")
    ledger.set_budget("account", 10, thresholds=["0.5"])
    ledger.reserve(6)
    with Deliverer(ledger, [f"apprise://{target}"]) as deliverer:
        assert deliverer.deliver_pending().delivered == 1
    [sent] = hook.json()
    assert sent["title"] == "account day budget at 50% (6 / 10 units)"
    assert "reached 50% of its limit" in sent["message"] and sent["type"] == "warning"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "unknown scheme 'ftp'"),
        ("example.com/hook", "unknown scheme"),
        ("https:///nohost", "must be http(s)://host/path"),
        ("https://example.com:99999/x", "invalid port"),
        ("https://example.com/x?secret=whsec_%%%", "not base64"),
        ("smtp://mail.example.com", "needs ?to="),
        ("smtp://mail.example.com?to=nobody", "is not an e-mail address"),
        ("smtp://mail.example.com?to=a@b.c&starttls=maybe", "starttls='maybe'"),
        ("smtp://mail.example.com?to=a@b.c&cc=x@y.z", "unknown option 'cc'"),
        ("smtps://mail.example.com?to=a@b.c&starttls=1", "already TLS"),
        ("slack://only-two/parts", "slack://T.../B.../<token>"),
        ("log://?level=loud", "log level 'loud' is unknown"),
        ("stderr://somewhere", "takes no host"),
        ("apprise://nonsense://x", "Apprise does not accept"),
        ("apprise://no-scheme", "apprise://<apprise URL>"),
        ("", "non-empty"),
    ],
)
def test_bad_sink_urls_are_rejected_when_configured(url: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as caught:
        sink_from_url(url)
    assert words in str(caught.value)


def test_good_sink_urls_and_secrets_stay_out_of_names() -> None:
    names = [
        sink_from_url(u).name
        for u in (
            "log://",
            "stderr://",
            f"https://example.com/hook?secret={SECRET}&team=a",
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "slack://T000/B000/XXXXSECRET",
            "smtp://user:pa%40ss@mail.example.com:2525?to=a@b.c&starttls=1",
        )
    ]
    assert names == [
        "log://kling_cost.alerts",
        "stderr://",
        "webhook:https://example.com",
        "slack:https://hooks.slack.com",
        "slack:https://hooks.slack.com",
        "email:smtp://mail.example.com:2525",
    ]


def test_a_config_file_with_a_bad_sink_fails_when_loaded(tmp_path: pytest.TempPathFactory) -> None:
    good = tmp_path / "good.toml"  # type: ignore[operator]
    good.write_text(
        '[alerts]\nsinks = ["log://", "https://example.com/h"]\nwebhook_secret = "whsec_c2VjcmV0"\n'
        'dashboard_url = "http://127.0.0.1:8787/"\nretry_base = 0\ntimeout = 3\n'
    )
    config = load_config(good)
    assert config.sinks == ("log://", "https://example.com/h") and config.backoff.delay(5) == timedelta(0)
    [_, webhook] = config.build_sinks()
    assert webhook.secret == "whsec_c2VjcmV0" and webhook.timeout == 3  # type: ignore[attr-defined]
    bad = tmp_path / "bad.toml"  # type: ignore[operator]
    bad.write_text('[alerts]\nsinks = ["smtp://mail.example.com"]\n')
    with pytest.raises(ConfigurationError, match=r"bad\.toml: e-mail sink URL .* needs \?to="):
        load_config(bad)
    bad.write_text("[alerts]\nsinks = ['log://']\nretry_bas = 1\n")
    with pytest.raises(ConfigurationError, match="unknown \\[alerts\\] setting\\(s\\) retry_bas"):
        load_config(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_config(tmp_path / "missing.toml")  # type: ignore[operator]
    assert AlertsConfig().sinks == ("log://",)


def test_a_slow_webhook_does_not_hold_back_the_terminal(ledger: Ledger) -> None:
    """``batch run`` prints alerts through a callback added to the configured sinks: it gets
    each alert while a slow webhook is still answering, not after it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.servers import serve

    arrived, release = threading.Event(), threading.Event()

    async def slow(request: Request) -> Response:
        import anyio.to_thread

        await request.body()
        arrived.set()
        await anyio.to_thread.run_sync(release.wait, 10)
        return Response("ok")

    printed: list[str] = []
    ledger.set_budget("account", 10, thresholds=["1"])
    ledger.reserve(10)
    with serve(Starlette(routes=[Route("/hook", slow, methods=["POST"])])) as base:
        config = AlertsConfig.from_mapping({"sinks": [f"{base}/hook"], "timeout": 20})
        deliverer = config.deliverer(ledger, [CallbackSink(printed.append, text=True, name="terminal")])
        deliverer.backoff = Backoff.none()
        passes: list[int] = []
        worker = threading.Thread(target=lambda: passes.append(deliverer.deliver_pending().delivered))
        worker.start()
        try:
            assert arrived.wait(10), "the webhook never got the alert"
            assert len(printed) == 1 and "account" in printed[0], "the terminal waited for the webhook"
        finally:
            release.set()
            worker.join(20)
            deliverer.close()
    assert passes == [1] and ledger.alerts()[0].status == "delivered"


def test_an_extra_sink_never_takes_a_configured_sinks_name(ledger: Ledger) -> None:
    """Each alert remembers the sinks that took it by name (``sent_to``), and ``kling-cost alerts
    deliver`` builds the configured sinks alone. A sink added to them (the batch's terminal, an
    application's own webhook to the same host) is sent first but named after them: had it taken
    a configured sink's name, an alert that sink never got would count as sent to it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.servers import serve

    down = threading.Event()
    down.set()
    got: list[str] = []

    async def receive(request: Request) -> Response:
        await request.body()
        name = request.path_params["name"]
        if name == "configured" and down.is_set():
            return Response("down", status_code=500)
        got.append(name)
        return Response("ok")

    ledger.set_budget("account", 10, thresholds=["1"])
    ledger.reserve(10)
    with serve(Starlette(routes=[Route("/{name}", receive, methods=["POST"])])) as base:
        config = AlertsConfig.from_mapping({"sinks": [f"{base}/configured"], "retry_base": 0})
        extra = sink_from_url(f"{base}/extra")
        names = [s.name for s in config.build_sinks()]
        assert [s.name for s in config.build_sinks([extra])][-len(names) :] == names
        with config.deliverer(ledger, [extra]) as first:  # the extra takes it; the configured is down
            assert first.deliver_pending().failed == 1
        down.clear()
        with config.deliverer(ledger) as later:  # `kling-cost alerts deliver`
            assert later.deliver_pending().delivered == 1
    assert got == ["extra", "configured"]
    assert ledger.alerts()[0].status == "delivered"
