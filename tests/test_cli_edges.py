"""Errors that must be one clear line with the right exit code: huge and negative limits, a
report period out of range, a missing ledger file given to a read-only command, a port in use."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost import StorageError
from kling_cost.cli import app
from kling_cost.ledger import open_ledger
from tests.helpers import FakeClock

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line(err: str) -> bool:
    return err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ("1e999999999", "too large"),
        ("-1e999999999", "too large"),
        ("1E+1000000", "too large"),
        ("-100", "must not be negative"),
        ("-0.5", "must not be negative"),
        ("-.5", "must not be negative"),
    ],
)
def test_huge_and_negative_limits_are_one_line_and_exit_2(ledger_url: str, limit: str, words: str) -> None:
    code, out, err = run("budget", "set", "account", limit, "--window", "day", "--ledger", ledger_url)
    assert code == 2, out + err
    assert one_line(err) and words in err and "No such option" not in err
    code, _, err = run("budget", "set", "project:x", "10", "--max-per-request", limit, "--ledger", ledger_url)
    assert code == 2 and one_line(err) and words in err
    with open_ledger(ledger_url) as led:
        assert led.budgets() == []


def test_a_mistyped_option_is_still_reported_when_no_number_is_negative(ledger_url: str) -> None:
    code, _, err = run("budget", "set", "account", "10", "--windw", "day", "--ledger", ledger_url)
    assert code == 2 and "No such option: --windw" in err


def test_a_report_period_out_of_range_is_one_line(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("account", 10)
    for args in (
        ("--since", "0001-01-01", "--tz", "Europe/Paris"),
        ("--since", "0001-01-01", "--tz", "America/New_York"),
        ("--since", "2026-01-01", "--until", "9999-12-31", "--tz", "Pacific/Kiritimati"),
        ("--since", "99999d"),
    ):
        code, out, err = run("report", *args, "--ledger", ledger_url)
        assert code == 2, (args, out, err)
        assert one_line(err) and ("out of range" in err or "before 1970-01-01" in err)
        code, _, err = run("export", *args, "--ledger", ledger_url)
        assert code == 2 and one_line(err), (args, err)


def test_a_report_since_1970_in_a_zone_with_summer_time_counts_everything(ledger_url: str) -> None:
    clock = FakeClock()
    with open_ledger(ledger_url, clock=clock) as led:
        for year in (1975, 2000, 2026):
            clock.set(datetime(year, 6, 15, 9, tzinfo=UTC))
            led.commit(led.reserve(Decimal(year - 1970), metadata={"model": "kling-v2-6", "mode": "std"}))
        clock.set(datetime(2026, 6, 15, 12, tzinfo=UTC))
    for tz in ("Europe/Paris", "America/New_York", "UTC"):
        code, out, err = run(
            "report",
            "--since",
            "1970-01-01",
            "--by",
            "day",
            "--tz",
            tz,
            "--format",
            "json",
            "--ledger",
            ledger_url,
        )
        assert code == 0, err
        data = json.loads(out)
        (total,) = data["totals"]  # one unit: one total
        assert (total["unit"], total["actual"], total["charges"]) == ("units", "91.000", 3)
        assert [r["day"] for r in data["rows"]] == ["1975-06-15", "2000-06-15", "2026-06-15"]


READ_ONLY = [
    ("report",),
    ("usage",),
    ("export", "--format", "jsonl"),
    ("budget", "list"),
    ("budget", "show", "account"),
    ("budget", "delete", "account"),
    ("alerts", "list"),
    ("alerts", "deliver"),
    ("keys", "list"),
    ("keys", "show", "bot"),
    ("keys", "revoke", "bot"),
    ("keys", "rotate", "bot"),
    ("ledger", "sweep"),
    ("serve", "--port", "0"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=[" ".join(c) for c in READ_ONLY])
def test_read_only_commands_refuse_a_missing_ledger_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "does-not-exist.db"
    code, out, err = run(*command, "--ledger", f"sqlite:///{missing}")
    assert code == 4, out + err
    assert one_line(err) and str(missing) in err and "kling-cost ledger migrate" in err
    assert not missing.exists() and out == ""


def test_batch_plan_and_ledger_copy_refuse_a_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    batch = tmp_path / "p.txt"
    batch.write_text("a fox\n")
    code, _, err = run("batch", "plan", str(batch), "--ledger", f"sqlite:///{missing}")
    assert code == 4 and one_line(err) and str(missing) in err
    target = tmp_path / "target.db"
    code, _, err = run("ledger", "copy", "--from", f"sqlite:///{missing}", "--to", f"sqlite:///{target}")
    assert code == 4 and one_line(err) and not missing.exists()


def test_commands_that_write_still_create_the_ledger(tmp_path: Path) -> None:
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    assert run("budget", "set", "account", "10", "--ledger", f"sqlite:///{first}")[0] == 0
    assert run("ledger", "migrate", "--ledger", f"sqlite:///{second}")[0] == 0
    assert first.is_file() and second.is_file()
    code, out, _ = run("budget", "list", "--ledger", f"sqlite:///{second}")
    assert code == 0 and "no budgets yet" in out


def test_open_ledger_create_false(tmp_path: Path, ledger_url: str) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="does not exist"):
        open_ledger(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
    with open_ledger(ledger_url) as led:
        led.set_budget("account", 5)
    with open_ledger(ledger_url, create=False) as led:  # an existing ledger opens, on both backends
        assert [b.scope for b in led.budgets()] == ["account"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kling_cost", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_serve_on_a_port_in_use_says_so_and_exits_2(tmp_path: Path, taken_port: int) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_ledger(url).close()
    done = cli("serve", "--port", str(taken_port), "--ledger", url)
    assert done.returncode == 2, done
    assert done.stdout == ""  # nothing announced
    assert one_line(done.stderr) and f"port {taken_port}" in done.stderr and "--port" in done.stderr


def test_simulate_on_a_port_in_use_says_so_and_exits_2(taken_port: int) -> None:
    done = cli("simulate", "--port", str(taken_port))
    assert done.returncode == 2, done
    assert "Kling simulator on" not in done.stdout
    assert one_line(done.stderr) and "already in use" in done.stderr and "--port" in done.stderr


def test_serve_on_an_address_this_machine_lacks_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_ledger(url).close()
    done = cli("serve", "--host", "192.0.2.1", "--token", "t", "--port", "0", "--ledger", url)
    assert done.returncode == 2, done
    assert one_line(done.stderr) and "not an address of this machine" in done.stderr


@pytest.mark.postgres
def test_commands_that_only_read_never_create_a_postgresql_ledger() -> None:
    """(Found by review: `report` on a mistyped ?schema= made the schema and its 16 tables and
    reported nothing spent.) One line, exit 4, no schema; a schema with another's tables but no
    ledger is refused the same way; an existing ledger still opens."""
    import psycopg

    from tests.helpers import POSTGRES_URL, fresh_postgres_url, need_postgres

    need_postgres()
    url = fresh_postgres_url()
    schema = url.rsplit("schema=", 1)[1]

    def exists() -> bool:
        with psycopg.connect(POSTGRES_URL) as conn:
            return (
                conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
                is not None
            )

    for args in (("report",), ("usage",), ("budget", "list"), ("alerts", "list")):
        code, _, err = run(*args, "--ledger", url)
        assert code == 4 and one_line(err) and f"no ledger in schema '{schema}'" in err, (args, err)
    with pytest.raises(StorageError, match="check \\?schema= in the URL"):
        open_ledger(url, create=False)
    assert not exists()
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(f'CREATE TABLE "{schema}".other (x int)')
        code, _, err = run("report", "--ledger", url)
        assert code == 4 and "no ledger in schema" in err
        assert run("budget", "set", "account", "10", "--ledger", url)[0] == 0  # a write creates it
        code, out, _ = run("budget", "list", "--ledger", url)
        assert code == 0 and "account" in out
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_settings_checked_only_sometimes_are_checked_always(tmp_path: Path) -> None:
    """(Found by review.) `keys create --tz Nope` without --budget made the key; `serve
    --refresh 0` named the library's parameter. One line each, exit 2, nothing created."""
    ledger = tmp_path / "l.db"
    code, _, err = run("keys", "create", "k1", "--tz", "Nope", "--ledger", f"sqlite:///{ledger}")
    assert code == 2 and one_line(err) and "time zone 'Nope' is unknown" in err
    assert not ledger.exists()
    run("ledger", "migrate", "--ledger", f"sqlite:///{ledger}")
    code, _, err = run("serve", "--refresh", "0", "--ledger", f"sqlite:///{ledger}")
    assert code == 2 and one_line(err) and "--refresh 0" in err and "refresh_seconds" not in err


def test_usage_charges_below_zero_is_one_line(tmp_path: Path) -> None:
    """(Found by review: accepted and ignored.)"""
    code, _, err = run("usage", "--charges", "-1", "--ledger", f"sqlite:///{tmp_path / 'l.db'}")
    assert code == 2 and one_line(err) and "--charges -1" in err


def test_an_error_quoting_a_huge_input_keeps_its_start_and_its_advice() -> None:
    """(Found by review: `estimate --model <100,000 characters>` printed all of them.)"""
    code, _, err = run("estimate", "--model", "x" * 100_000)
    assert code == 2 and one_line(err)
    assert len(err) < 2100
    assert err.startswith("error: model 'xxx") and "characters left out" in err
    assert "kling-v2-6" in err  # the end of the line, with the models offered, is kept
