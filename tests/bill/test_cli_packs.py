"""``kling-cost packs`` and ``budget set --from-packs``: JSON shapes, the table, one-line errors."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from tests.bill.conftest import DAY, Bill
from tests.servers import AK, SK, free_port

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    monkeypatch.delenv("KLING_API_KEY", raising=False)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.sqlite
def test_packs_json_table_and_from_packs_budget(bill: Bill, env: None) -> None:
    now = bill.now_ms()
    bill.sim.state.add_pack(
        "video",
        40,
        purchase_time=now,
        effective_time=now,
        invalid_time=now + 20 * DAY * 1000,
        name="video 40",
    )
    url = bill.ledger.backend.url
    code, out, err = run("packs", "--json", "--ledger", url, "--base-url", bill.url)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) >= {"taken_at", "window_start", "window_end", "burn_per_day", "packs", "note"}
    pack = next(p for p in data["packs"] if p["name"] == "video 40")
    assert pack["pack_type"] == "video" and Decimal(pack["remaining"]) == 40
    assert Decimal(pack["units_at_risk"]) == 40 and Decimal(pack["usd_left"]) == Decimal("5.6")
    assert "12 h" in pack["remaining_note"]

    code, out, err = run(
        "budget", "set", "account", "--from-packs", "video", "--ledger", url, "--base-url", bill.url, "--json"
    )
    assert code == 0, err
    assert Decimal(json.loads(out)["limit"]) == 40 and json.loads(out)["window"] == "lifetime"
    bill.sim.state.add_pack(
        "video", 5, purchase_time=now, effective_time=now, invalid_time=now + 20 * DAY * 1000, name="video 5"
    )
    code, out, err = run("packs", "--refresh", "--ledger", url, "--base-url", bill.url)
    assert code == 0, err
    assert "Resource packs" in out and "lag" in out and "budget account lifetime: limit 45" in out
    assert bill.ledger.usage("account", "lifetime").limit == 45

    code, _, err = run("budget", "set", "account", "10", "--from-packs", "video", "--ledger", url)
    assert code == 2 and err.count("\n") == 1 and "not both" in err


@pytest.mark.sqlite
def test_packs_errors_are_one_line(bill: Bill, monkeypatch: pytest.MonkeyPatch) -> None:
    url = bill.ledger.backend.url
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run("packs", "--ledger", url, "--base-url", bill.url)
    assert code != 0 and err.count("\n") == 1 and "credentials" in err and "Traceback" not in err
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    code, _, err = run("packs", "--ledger", url, "--base-url", f"http://127.0.0.1:{free_port()}")
    assert code != 0 and err.count("\n") == 1 and err.startswith("error:")
    code, _, err = run("packs", "--ledger", "nosuch://x", "--base-url", bill.url)
    assert code == 2 and err.count("\n") == 1 and "unknown scheme" in err
    code, _, err = run("packs", "--type", "oops", "--ledger", url, "--base-url", bill.url)
    assert code == 2 and "PACK=video" in err
