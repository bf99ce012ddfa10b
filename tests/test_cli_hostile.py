"""Hostile values given to the CLI (found by an outside review): each is one clear line, the
right exit code, no traceback, and nothing changed in the ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kling_cost import ValidationError
from kling_cost.budgets import validate_tz
from kling_cost.cli import app
from kling_cost.ledger import open_ledger

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line(err: str) -> bool:
    return err.startswith("error: ") and len(err.strip().splitlines()) == 1


# A directory of the zone database ("Europe"), and a name longer than a file name may be, made
# ZoneInfo raise OSError (IsADirectoryError, ENAMETOOLONG): "internal error", exit 1, HTTP 500.
ODD_ZONES = ["Europe", "America", "Etc", "A" * 300]


@pytest.mark.parametrize("zone", ODD_ZONES, ids=["Europe", "America", "Etc", "long"])
def test_a_zone_directory_or_overlong_name_is_a_validation_error(zone: str) -> None:
    with pytest.raises(ValidationError, match="time zone"):
        validate_tz(zone)


def test_set_budget_with_a_zone_directory_changes_nothing(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("account", 10)
        with pytest.raises(ValidationError, match="time zone 'Europe' is unknown"):
            led.set_budget("project:x", 5, tz="Europe")
        with pytest.raises(ValidationError, match="time zone"):
            led.set_budget("account", 99, tz="America")
        assert [(b.scope, b.limit, b.tz) for b in led.budgets()] == [("account", 10, "UTC")]


@pytest.mark.parametrize(
    "args",
    [
        ("budget", "set", "account", "100", "--tz", "Europe"),
        ("report", "--tz", "Europe"),
        ("report", "--tz", "A" * 300),
        ("export", "--tz", "Europe", "--since", "7d"),
    ],
    ids=["budget-set", "report", "report-long", "export"],
)
def test_cli_zone_directory_is_one_line_exit_2(ledger_url: str, args: tuple[str, ...]) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("account", 10)
    code, out, err = run(*args, "--ledger", ledger_url)
    assert code == 2, out + err
    assert one_line(err) and "time zone" in err and "internal error" not in err
    with open_ledger(ledger_url) as led:
        assert [(b.limit, b.tz) for b in led.budgets()] == [(10, "UTC")]


# A moment whose window ends after year 9999 (or starts before year 1) overflowed datetime:
# "internal error: OverflowError" from `budget show --at` / `usage --at` and from the library.
@pytest.mark.parametrize(
    "moment",
    [
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, tzinfo=UTC),
    ],
    ids=["9999", "0001"],
)
def test_usage_at_the_ends_of_time_is_a_validation_error(ledger_url: str, moment: datetime) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("project:x", 10, "month", tz="America/New_York")
        with pytest.raises(ValidationError, match="out of range"):
            led.usage("project:x", "month", at=moment)
        with pytest.raises(ValidationError, match="out of range"):
            led.usages(at=moment)


@pytest.mark.parametrize(
    "args",
    [
        ("budget", "show", "project:x", "--at", "9999-12-31T23:59:59+00:00"),
        ("budget", "show", "project:x", "--at", "9999-12-31T23:59:59-14:00"),
        ("usage", "--at", "9999-12-31T23:59:59+00:00"),
        ("usage", "--at", "0001-01-01T00:00:00+00:00"),
    ],
)
def test_cli_at_the_ends_of_time_is_one_line_exit_2(ledger_url: str, args: tuple[str, ...]) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("project:x", 10, tz="America/New_York")
    code, out, err = run(*args, "--ledger", ledger_url)
    assert code == 2, out + err
    assert one_line(err) and "out of range" in err


def test_alerts_list_with_a_huge_limit_lists_the_alerts(ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("project:x", 10)
        led.reserve(9, ["project:x"])
        assert len(led.alerts(limit=10**30)) == 2  # more than storage integers hold: all rows
    code, out, err = run("alerts", "list", "--limit", str(10**20), "--json", "--ledger", ledger_url)
    assert code == 0, out + err
    assert len(json.loads(out)) == 2


@pytest.mark.parametrize("limit", ["-inf", "-Infinity", "-nan", "-NaN", "-sNaN"])
def test_negative_infinity_and_nan_limits_are_the_librarys_refusal(ledger_url: str, limit: str) -> None:
    code, out, err = run("budget", "set", "account", limit, "--ledger", ledger_url)
    assert code == 2, out + err
    assert one_line(err) and "No such option" not in err
    code, out, err = run("budget", "set", "account", "5", "--max-per-request", limit, "--ledger", ledger_url)
    assert code == 2 and one_line(err) and "No such option" not in err, err
    with open_ledger(ledger_url) as led:
        assert led.budgets() == []


def test_advise_with_an_absurd_count_is_one_line() -> None:
    code, out, err = run("advise", "--count", "99999999999999")
    assert code == 2, out + err
    assert one_line(err) and "--count" in err


@pytest.mark.parametrize(
    ("query", "words"),
    [("timeout=nan", "timeout"), ("timeout=inf", "timeout"), ("timeout=1e999", "timeout")],
)
def test_sqlite_url_options_that_are_not_finite_are_one_line(tmp_path: Path, query: str, words: str) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_ledger(url).close()
    code, out, err = run("report", "--ledger", f"{url}?{query}")
    assert code == 2, out + err
    assert one_line(err) and words in err


def test_a_malformed_postgresql_url_is_one_line() -> None:
    code, out, err = run("report", "--ledger", "postgresql://postgres:hunter2@[::1:5432/test")
    assert code == 2, out + err
    assert one_line(err) and "hunter2" not in err


def test_ledger_copy_json_does_not_print_passwords(tmp_path: Path, ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.set_budget("account", 10)
        shown = led.url
    secret_url = ledger_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    target = tmp_path / "copy.db"
    code, out, err = run("ledger", "copy", "--from", secret_url, "--to", f"sqlite:///{target}", "--json")
    assert code == 0, out + err
    data = json.loads(out)
    assert "s3cret-pw" not in out
    assert data["from"] == (
        shown.replace("postgres@", "postgres:***@", 1) if "postgres@" in ledger_url else shown
    )


def test_a_failed_export_leaves_the_output_file_as_it_was(tmp_path: Path, ledger_url: str) -> None:
    with open_ledger(ledger_url) as led:
        led.commit(led.reserve(5, ["project:x"]))
    out_file = tmp_path / "charges.csv"
    out_file.write_text("last month's export\n")
    for bad in (("--since", "bogus"), ("--tz", "Mars/Olympus"), ("--scope", "Not A Scope")):
        code, _, err = run(
            "export", "--format", "csv", *bad, "--output", str(out_file), "--ledger", ledger_url
        )
        assert code == 2 and one_line(err), err
        assert out_file.read_text() == "last month's export\n"
    code, _, err = run("export", "--format", "csv", "--output", str(out_file), "--ledger", ledger_url)
    assert code == 0, err
    assert out_file.read_text().startswith("timestamp,")


@pytest.mark.parametrize(
    "period",
    [
        ("--since", "2026-12-01", "--until", "2026-01-01"),
        ("--until", "2020-01-01"),  # before the default --since 30d
    ],
    ids=["swapped", "until-before-30d"],
)
def test_a_period_that_ends_before_it_starts_is_an_error_not_nothing_spent(
    ledger_url: str, period: tuple[str, ...]
) -> None:
    with open_ledger(ledger_url) as led:
        led.commit(led.reserve(5, ["project:x"]))
    commands = [("report",), ("report", "--format", "json"), ("export", "--format", "csv")]
    if "--since" not in period:  # export has no default --since: all charges until then
        commands.pop()
    for command in commands:
        code, out, err = run(*command, *period, "--ledger", ledger_url)
        assert code == 2 and out == "", (command, out)
        assert one_line(err) and "is before since" in err, err
