from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kling_cost import ConfigurationError, StorageError, ValidationError
from kling_cost.ledger import Ledger, open_ledger


def snapshot(ledger: Ledger) -> tuple[Any, ...]:
    return (
        [b.to_dict() for b in ledger.budgets()],
        [u.to_dict() for u in ledger.usages()],
        [r.to_dict() for r in ledger.reservations()],
        [c.to_dict() for c in ledger.charges()],
    )


BAD_CALLS = [
    ("reserve zero", lambda led: led.reserve(0, ["project:a"])),
    ("reserve negative", lambda led: led.reserve(-5, ["project:a"])),
    ("reserve NaN", lambda led: led.reserve(Decimal("NaN"), ["project:a"])),
    ("reserve float", lambda led: led.reserve(1.5, ["project:a"])),
    ("reserve sub-thousandth", lambda led: led.reserve("0.0001", ["project:a"])),
    ("reserve bad scope", lambda led: led.reserve(1, ["Project A"])),
    ("reserve bad scope kind", lambda led: led.reserve(1, ["project:"])),
    ("reserve zero ttl", lambda led: led.reserve(1, ttl=__import__("datetime").timedelta(0))),
    ("limit zero", lambda led: led.set_budget("project:a", 0)),
    ("limit negative", lambda led: led.set_budget("project:a", -1)),
    ("unknown window", lambda led: led.set_budget("project:a", 10, "fortnight")),
    ("unknown tz", lambda led: led.set_budget("project:a", 10, tz="Mars/Olympus")),
    ("bad threshold", lambda led: led.set_budget("project:a", 10, thresholds=["1.5"])),
    ("commit negative", lambda led: led.commit(led.reservations()[0], -1)),
    ("bad metadata", lambda led: led.reserve(1, metadata={"x": object()})),
    # before: a raw OSError (a zone name too long for a file name)
    ("tz too long", lambda led: led.set_budget("project:a", 10, tz="Europe/" + "x" * 300)),
    # before: [] on SQLite, a StorageError (NUL) or a raw UnicodeEncodeError on PostgreSQL
    ("unknown reservation status", lambda led: led.reservations(status="reserved\x00")),
    ("unknown alert status", lambda led: led.alerts(status="pending\udc80")),
    # before: every row on SQLite (LIMIT -1), a StorageError on PostgreSQL
    ("negative limit", lambda led: led.reservations(limit=-1)),
]


@pytest.mark.parametrize(("name", "call"), BAD_CALLS, ids=[n for n, _ in BAD_CALLS])
def test_bad_input_changes_nothing(ledger: Ledger, name: str, call: Any) -> None:
    ledger.set_budget("project:a", 100)
    ledger.reserve(10, ["project:a"])
    before = snapshot(ledger)
    with pytest.raises(ValidationError) as info:
        call(ledger)
    assert str(info.value)
    assert snapshot(ledger) == before


@pytest.mark.parametrize(
    "url",
    [
        "mysql://localhost/db",
        "sqlite://relative.db",
        "sqlite:///{tmp}/missing-dir/ledger.db",
        "sqlite:///{tmp}",
        "sqlite:///{tmp}/x.db?synchronous=sometimes",
        "sqlite:///{tmp}/x.db?colour=red",
        "sqlite:///:memory:",
        "postgresql://",
        "postgresql://postgres@127.0.0.1:5432/test?schema=Bad-Name",
        "nonsense",
    ],
)
def test_malformed_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_ledger(url.format(tmp=tmp_path))


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("this is not a database" * 100)
    with pytest.raises(ConfigurationError, match="cannot open SQLite ledger"):
        open_ledger(f"sqlite:///{path}")


def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="cannot reach the PostgreSQL ledger") as caught:
        open_ledger("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)
    assert "\n" not in str(caught.value) and "Connection refused" in str(caught.value)


def test_default_location_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kling_cost.ledger import default_ledger_url

    assert default_ledger_url().startswith("sqlite:///") and default_ledger_url().endswith("ledger.db")
    monkeypatch.setenv("KLING_COST_LEDGER", f"sqlite:///{tmp_path}/env.db")
    with open_ledger() as led:
        assert led.url == f"sqlite:///{tmp_path}/env.db"


@pytest.mark.parametrize("ref", ["abc\x00", "abc\udc80"])
def test_a_reservation_id_that_cannot_exist_is_unknown_everywhere(ledger: Ledger, ref: str) -> None:
    """Before: not found on SQLite, a StorageError on PostgreSQL (NUL), a raw
    UnicodeEncodeError on both (a lone surrogate)."""
    from datetime import timedelta

    from kling_cost import ReservationError

    ledger.set_budget("project:a", 100)
    ledger.reserve(10, ["project:a"])
    before = snapshot(ledger)
    for call in (
        lambda: ledger.commit(ref),
        lambda: ledger.release(ref),
        lambda: ledger.extend(ref, timedelta(minutes=1)),
        lambda: ledger.attach_task(ref, "t-1"),
    ):
        with pytest.raises(ReservationError, match="does not exist"):
            call()
    assert ledger.get_reservation(ref) is None
    assert snapshot(ledger) == before
