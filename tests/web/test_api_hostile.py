"""Hostile query values on the JSON API (found by an outside review): 400 with one message,
never a 500, never a silently empty answer."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kling_cost import ValidationError
from kling_cost.ledger import Ledger, open_ledger
from kling_cost.web import create_dashboard_app
from tests.helpers import FakeClock
from tests.web.conftest import HOSTILE_NAME, HOSTILE_SCOPE, add_hostile_key, free_port


@pytest.mark.parametrize(
    "path",
    [
        "/api/overview?tz=Europe",
        "/api/budgets?tz=America",
        "/api/daily?tz=Etc",
        "/api/report?tz=Europe",
        "/api/drift?tz=" + "A" * 300,
        "/api/breakdown/model?tz=Europe",
    ],
)
def test_a_zone_directory_is_400_not_500(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any], path: str
) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        answer = httpx.get(base + path)
    assert answer.status_code == 400, answer.text
    assert "time zone" in answer.json()["error"]


def test_an_unknown_alert_status_is_400_not_an_empty_list(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any]
) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        bad = httpx.get(f"{base}/api/alerts?status=Pending")
        good = httpx.get(f"{base}/api/alerts?status=pending")
    assert bad.status_code == 400 and "status" in bad.json()["error"], bad.text
    assert good.status_code == 200 and good.json()["alerts"]


def test_the_ledger_refuses_an_unknown_alert_status(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("project:x", 10)
        led.reserve(9, ["project:x"])
        with pytest.raises(ValidationError, match="status 'sent' is unknown"):
            led.alerts(status="sent")
        assert len(led.alerts(status="pending")) == 2 and led.alerts(status="delivered") == []


def test_a_dashboard_zone_directory_is_refused_when_built(known: tuple[Ledger, FakeClock]) -> None:
    ledger, _ = known
    with pytest.raises(ValidationError, match="time zone"):
        create_dashboard_app(ledger, tz="Europe")


def _readme_api_urls() -> list[str]:
    """The JSON API table of the README, each endpoint with the query it documents."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    urls = re.findall(r"^\| `GET (/api/[^`]+)` \|", readme, flags=re.M)
    assert len(urls) >= 8, urls
    return [u.replace("{model,mode,project,key,...}", "model") for u in urls]


@pytest.mark.parametrize("url", _readme_api_urls())
def test_every_api_url_of_the_readme_answers_as_written(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any], url: str
) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        answer = httpx.get(base + url)
    assert answer.status_code == 200, (url, answer.text)


@pytest.mark.parametrize("path", ["/api/breakdown/model", "/api/drift"])
@pytest.mark.parametrize("days", ["0", "-5", "3661", "99999999999999"])
def test_days_out_of_range_is_named_as_days(
    known: tuple[Ledger, FakeClock], serve: Callable[[Any], Any], path: str, days: str
) -> None:
    ledger, _ = known
    with serve(create_dashboard_app(ledger)) as base:
        answer = httpx.get(f"{base}{path}?days={days}")
    assert answer.status_code == 400
    assert answer.json()["error"] == f"days must be between 1 and 3660, not {days}"


def test_the_access_log_never_keeps_the_dashboard_token(known: tuple[Ledger, FakeClock]) -> None:
    # Found by an outside review: with KLING_COST_LOG_LEVEL=info, uvicorn logged
    # 'GET /?token=<the token> HTTP/1.1' for the documented "open /?token=T once".
    ledger, _ = known
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    app = create_dashboard_app(ledger, token="sekrit-token-123")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="info"))
    access = logging.getLogger("uvicorn.access")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        access.addHandler(handler)
        base = f"http://127.0.0.1:{server.config.port}"
        assert httpx.get(f"{base}/?token=sekrit-token-123").status_code == 200
        assert httpx.get(f"{base}/api/budgets?days=1&token=sekrit-token-123").status_code == 200
    finally:
        access.removeHandler(handler)
        server.should_exit = True
        thread.join(timeout=10)
    assert len(seen) == 2, seen
    assert all("sekrit-token-123" not in line and "token=***" in line for line in seen), seen


def test_api_keys_serves_a_hostile_key_name_as_plain_data(
    ledger_url: str, serve: Callable[[Any], Any]
) -> None:
    clock = FakeClock()
    with open_ledger(ledger_url, clock=clock) as ledger:
        ledger.set_budget("account", 10, "day")
        add_hostile_key(ledger)
        with serve(create_dashboard_app(ledger, now=clock)) as base:
            answer = httpx.get(f"{base}/api/keys")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    (row,) = answer.json()["keys"]
    assert row["name"] == HOSTILE_NAME and row["scope"] == "key:" + HOSTILE_NAME
    assert row["scopes"] == ["key:" + HOSTILE_NAME, HOSTILE_SCOPE]
    assert row["budgets"] == [] and row["headroom"]["scope"] == "account"
    assert row["spend"] == [{"unit": "units", "all_time": "0.000", "charges": 0}]
