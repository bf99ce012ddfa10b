"""``kling-cost keys create|list|show|revoke|rotate`` (issue 15): credentials printed once and
accepted by the proxy's checks, JSON shapes, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app
from kling_cost.errors import AuthError
from kling_cost.kling.auth import JWTAuth
from kling_cost.ledger import open_ledger
from kling_cost.proxy.keys import ENV_MASTER_KEY, Keys, MasterKey

runner = CliRunner()

SECRETS = ("secret_key", "api_key", "webhook_secret")
RECORD_FIELDS = {
    "name",
    "access_key",
    "state",
    "scopes",
    "unit",
    "max_per_request",
    "models",
    "concurrency",
    "callback_hosts",
    "expires_at",
    "revoked_at",
    "created_at",
    "rotated_at",
    "last_used_at",
}
BUDGET_FIELDS = {"window", "tz", "unit", "limit", "spent", "reserved", "remaining", "period"}


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback would have reached the user
    return result.exit_code, result.stdout, result.stderr


def one_line(err: str) -> bool:
    return err.startswith("error: ") and len(err.strip().splitlines()) == 1


def key_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "kling-cost" / "master.key"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


def create(url: str, *args: str) -> dict[str, Any]:
    code, out, err = run("keys", "create", *args, "--ledger", url, "--json")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def accepted(url: str, data: dict[str, Any]) -> set[str]:
    """Which of the printed credentials the proxy's check accepts now (API key, AK/SK JWT)."""
    found = set()
    with open_ledger(url) as ledger:
        keys = Keys(ledger, MasterKey.load(create=False))
        now = datetime.now(UTC)
        jwt_header = JWTAuth(data["access_key"], data["secret_key"]).authorization()
        for kind, header in (("api_key", f"Bearer {data['api_key']}"), ("jwt", jwt_header)):
            try:
                keys.authenticate(header, now=now)
            except AuthError:
                continue
            found.add(kind)
    return found


def test_lifecycle_on_both_backends(ledger_url: str) -> None:
    url = ledger_url
    data = create(
        url,
        "film-bot",
        "--scope",
        "project:film",
        "--scope",
        "user:bob",
        "--budget",
        "50/day",
        "--budget",
        "1000/month",
        "--models",
        "kling-3.0,kling-v2-6",
        "--concurrency",
        "3",
        "--expires",
        "30d",
        "--max-per-request",
        "10",
        "--allow-callback-host",
        "Hooks.LAN",
        "--proxy-url",
        "https://proxy.example:8788",
    )
    assert set(data) == RECORD_FIELDS | set(SECRETS) | {"budgets", "proxy_url", "master_key"}
    assert data["scopes"] == ["key:film-bot", "project:film", "user:bob"]
    assert (data["state"], data["unit"], data["concurrency"], data["max_per_request"]) == (
        "active",
        "units",
        3,
        "10.000",
    )
    assert data["models"] == ["kling-3.0", "kling-v2-6"] and data["callback_hosts"] == ["hooks.lan"]
    assert data["proxy_url"] == "https://proxy.example:8788"
    assert data["master_key"]["source"] == str(key_file())
    assert stat.S_IMODE(key_file().stat().st_mode) == 0o600
    expires = datetime.fromisoformat(data["expires_at"]) - datetime.fromisoformat(data["created_at"])
    assert expires == timedelta(days=30)
    assert [(b["window"], b["limit"], b["remaining"]) for b in data["budgets"]] == [
        ("day", "50.000", "50.000"),
        ("month", "1000.000", "1000.000"),
    ]
    assert all(set(b) == BUDGET_FIELDS for b in data["budgets"])
    assert accepted(url, data) == {"api_key", "jwt"}

    with open_ledger(url) as ledger:  # some spending on the key's scope
        record = ledger.proxy.key("film-bot")
        assert record is not None
        ledger.commit(ledger.reserve(7, record.all_scopes), 7)
        ledger.proxy.claim_task(record, "ext-1", "/v1/videos/text2video", None)
        ledger.proxy.touch(record, ledger.clock())

    code, out, _ = run("keys", "list", "--ledger", url, "--json")
    assert code == 0
    [listed] = json.loads(out)
    assert set(listed) == RECORD_FIELDS | {"budgets"}
    assert [(b["spent"], b["remaining"]) for b in listed["budgets"]] == [
        ("7.000", "43.000"),
        ("7.000", "993.000"),
    ]
    assert listed["last_used_at"] is not None
    code, out, _ = run("keys", "list", "--ledger", url)
    assert code == 0 and "film-bot" in out and "active" in out and "43 left" in out
    assert data["api_key"] not in out and data["secret_key"] not in out

    code, out, _ = run("keys", "show", "film-bot", "--ledger", url, "--json")
    shown = json.loads(out)
    assert code == 0 and set(shown) == RECORD_FIELDS | {"budgets", "open_tasks"}
    assert shown["open_tasks"] == 1 and shown["access_key"] == data["access_key"]
    code, out, _ = run("keys", "show", "film-bot", "--ledger", url)
    assert code == 0 and "open tasks:      1" in out and "kling-3.0, kling-v2-6" in out
    assert not any(data[s] in out for s in SECRETS)

    code, out, _ = run("keys", "rotate", "film-bot", "--ledger", url, "--json")
    assert code == 0
    rotated = json.loads(out)
    assert set(rotated) == RECORD_FIELDS | set(SECRETS) | {"proxy_url", "master_key"}
    assert rotated["rotated_at"] is not None
    assert all(rotated[f] != data[f] for f in ("access_key", *SECRETS))
    assert accepted(url, data) == set()
    assert accepted(url, rotated) == {"api_key", "jwt"}

    code, out, _ = run("keys", "revoke", "film-bot", "--ledger", url, "--json")
    assert code == 0 and json.loads(out)["state"] == "revoked"
    assert accepted(url, rotated) == set()
    code, out, _ = run("keys", "list", "--ledger", url, "--json")
    assert [k["state"] for k in json.loads(out)] == ["revoked"]
    code, _, err = run("keys", "rotate", "film-bot", "--ledger", url)
    assert code == 2 and one_line(err) and "revoked" in err
    code, _, err = run("keys", "create", "film-bot", "--ledger", url)
    assert code == 2 and one_line(err) and "revoked keys keep their name" in err


def test_create_prints_the_credentials_once_with_how_to_use_them(url: str) -> None:
    code, out, err = run("keys", "create", "bot", "--budget", "20/week", "--unit", "credits", "--ledger", url)
    assert code == 0, err
    pairs = [line.strip().split(":", 1) for line in out.splitlines() if line.startswith("  ")]
    lines = {label: value.strip() for label, value in pairs}
    assert set(lines) == {"access key", "secret key", "API key", "webhook secret"}
    assert lines["API key"].startswith("kc-") and lines["webhook secret"].startswith("whsec_")
    assert "shown now and never again" in out and "http://127.0.0.1:8788" in out
    assert "Authorization: Bearer <API key>" in out and "AK/SK" in out
    assert "0/20 credits per week" in out
    data = {"access_key": lines["access key"], "secret_key": lines["secret key"], "api_key": lines["API key"]}
    assert accepted(url, data) == {"api_key", "jwt"}
    code, out, _ = run("keys", "list", "--ledger", url)
    assert code == 0 and lines["secret key"] not in out
    with open_ledger(url) as ledger:
        [budget] = ledger.budgets("key:bot")
        assert (budget.window, budget.unit) == ("week", "credits")


def test_rotate_prints_new_credentials(url: str) -> None:
    old = create(url, "bot")
    code, out, _ = run("keys", "rotate", "bot", "--ledger", url)
    assert code == 0 and "rotated key bot" in out and "no longer work" in out
    assert old["api_key"] not in out and "API key:        kc-" in out


def test_master_key_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MASTER_KEY, "e" * 40)
    data = create(url, "bot")
    assert data["master_key"]["source"] == ENV_MASTER_KEY and not key_file().exists()
    assert accepted(url, data) == {"api_key", "jwt"}
    monkeypatch.setenv(ENV_MASTER_KEY, "f" * 40)  # another master key: the same ledger signs nothing
    assert accepted(url, data) == {"api_key"}


def test_master_key_problems_are_one_line_and_no_key(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MASTER_KEY, "too-short")
    code, out, err = run("keys", "create", "bot", "--ledger", url)
    assert code == 2 and one_line(err) and "shorter than 32" in err and out == ""
    monkeypatch.delenv(ENV_MASTER_KEY)
    key_file().parent.mkdir(parents=True)
    key_file().write_text("k" * 40)
    key_file().chmod(0o644)
    code, out, err = run("keys", "create", "bot", "--ledger", url)
    assert code == 2 and one_line(err) and f"chmod 600 {key_file()}" in err
    with open_ledger(url) as ledger:
        assert ledger.proxy.keys() == []


def test_an_expired_key_is_listed_as_expired(url: str) -> None:
    with open_ledger(url, clock=lambda: datetime.now(UTC) - timedelta(days=2)) as ledger:
        Keys(ledger, MasterKey.load()).create("old", expires_in=timedelta(days=1))
    code, out, _ = run("keys", "list", "--ledger", url, "--json")
    assert code == 0 and [k["state"] for k in json.loads(out)] == ["expired"]
    code, out, _ = run("keys", "list", "--ledger", url)
    assert "expired" in out


def test_empty_list(url: str) -> None:
    open_ledger(url).close()
    assert run("keys", "list", "--ledger", url, "--json")[:2] == (0, "[]\n")
    code, out, _ = run("keys", "list", "--ledger", url)
    assert code == 0 and "kling-cost keys create" in out


BAD_CREATES = [
    (["bad name"], "key name"),
    (["-x"], "No such option"),
    (["bot", "--scope", "Project:film"], "scope 'Project:film' is not valid"),
    (["bot", "--scope", "film"], "scope 'film' is not valid"),
    (["bot", "--budget", "0/day"], "budget 0/day: limit must be greater than zero"),
    (["bot", "--budget", "5/fortnight"], "window 'fortnight' is unknown"),
    (["bot", "--budget", "50"], "AMOUNT/WINDOW"),
    (["bot", "--budget", "ten/day"], "is not a number"),
    (["bot", "--budget", "5/day", "--budget", "6/day"], "more than one day budget"),
    (["bot", "--budget", "5/day", "--tz", "Mars/Base"], "time zone"),
    (["bot", "--models", "kling-9"], "unknown model 'kling-9'"),
    (["bot", "--models", "kling-3.0,nope"], "unknown model 'nope'"),
    (["bot", "--models", ","], "model list is empty"),
    (["bot", "--concurrency", "0"], "concurrency 0 is not valid"),
    (["bot", "--concurrency", "-2"], "concurrency"),
    (["bot", "--concurrency", "many"], "is not a whole number"),
    (["bot", "--unit", "foo"], "unit 'foo' is not valid"),
    (["bot", "--max-per-request", "0"], "greater than zero"),
    (["bot", "--max-per-request", "ten"], "max per request 'ten' is not a number"),
    (["bot", "--expires", "30"], "Nd, Nh or Nm"),
    (["bot", "--expires", "0d"], "at least 1"),
    (["bot", "--expires", "99999d"], "at most 3650d"),
    (["bot", "--allow-callback-host", "http://x/"], "callback host"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_CREATES, ids=[" ".join(a) for a, _ in BAD_CREATES])
def test_bad_create_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], fragment: str) -> None:
    target = tmp_path / "never.db"
    code, out, err = run("keys", "create", *args, "--ledger", f"sqlite:///{target}")
    assert code == 2, out + err
    assert one_line(err) and fragment in err, err
    assert out == "" and not target.exists() and not key_file().exists()


@pytest.mark.parametrize(
    ("ledger", "code", "fragment"),
    [
        ("nope://x", 2, "unknown scheme 'nope'"),
        ("postgresql://postgres@127.0.0.1:1/x", 4, "cannot reach the PostgreSQL ledger"),
        ("sqlite:////nonexistent-dir/sub/keys.db", 2, "nonexistent-dir"),
    ],
)
def test_broken_ledger_url_is_one_line_and_writes_nothing(ledger: str, code: int, fragment: str) -> None:
    got, out, err = run("keys", "create", "bot", "--ledger", ledger)
    assert got == code and one_line(err) and fragment in err, err
    assert out == "" and not key_file().exists()


@pytest.mark.parametrize("command", ["show", "revoke", "rotate"])
def test_unknown_key_is_one_line(url: str, command: str) -> None:
    create(url, "bot")
    code, out, err = run("keys", command, "nobody", "--ledger", url)
    assert code == 2 and one_line(err) and "no key named 'nobody'" in err and out == ""
    code, out, err = run("keys", command, "bad name", "--ledger", url)
    assert code == 2 and one_line(err) and "key name" in err
    code, out, _ = run("keys", "list", "--ledger", url, "--json")
    [listed] = json.loads(out)
    assert (listed["name"], listed["state"], listed["rotated_at"]) == ("bot", "active", None)


@pytest.mark.parametrize("command", [["list"], ["show", "bot"], ["revoke", "bot"], ["rotate", "bot"]])
def test_commands_on_a_missing_ledger_create_nothing(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.db"
    code, out, err = run("keys", *command, "--ledger", f"sqlite:///{missing}")
    assert code == 4 and one_line(err) and "does not exist" in err
    assert out == "" and not missing.exists() and not key_file().exists()
