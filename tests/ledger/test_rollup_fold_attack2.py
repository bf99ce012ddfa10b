"""Second outside review of the deferred report rollup, after c3c66f8 (the fixes of the first
review). Each test here fails on baf342c; see the docstrings for what each one shows."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from kling_cost.errors import KlingCostError
from kling_cost.ledger import open_ledger
from kling_cost.ledger.urls import pg_conninfo as _parse_url
from kling_cost.ledger.urls import redact_url
from kling_cost.reports import report
from tests.helpers import POSTGRES_URL, FakeClock


@pytest.mark.postgres
def test_rows_and_totals_of_one_report_agree_while_another_process_folds(
    pg_url: str, clock: FakeClock
) -> None:
    """With a scope grouping, ``_from_rollup`` reads the rows and the totals in two separate
    snapshot transactions. A fold of another process (every 2 s in the background) that
    commits between them puts charges in the totals that no row has: here every charge names
    one project, yet the total counts 3 charges and the rows 2. The raw-charges path reads both
    in one pass and never disagrees. (The other process's fold is placed in that window here;
    on a busy ledger it lands there by itself now and then.)"""
    with open_ledger(pg_url, clock=clock, fold_interval=None) as writer:
        writer.set_budget("project:a", 1000)
        writer.set_budget("project:b", 1000)
        writer.commit(writer.reserve("1", ["project:a"]), actual="1")
        writer.commit(writer.reserve("1", ["project:b"]), actual="1")
        with open_ledger(pg_url, clock=clock, fold_interval=None) as reader:
            sums = reader.rollup.sums
            calls = []

            def sums_then_a_fold_elsewhere(*args: object, **kwargs: object) -> object:
                rows = sums(*args, **kwargs)  # type: ignore[arg-type]
                if not calls:
                    writer.commit(writer.reserve("1", ["project:a"]), actual="1")
                    writer.rollup.fold()  # another process's background fold
                calls.append(1)
                return rows

            reader.rollup.sums = sums_then_a_fold_elsewhere  # type: ignore[method-assign]
            rep = report(reader, "project", tz="UTC")
            assert rep.source == "rollup"
            in_rows = sum(r.charges for r in rep.rows)
            in_totals = sum(t.charges for t in rep.totals)
            assert in_rows == in_totals, (in_rows, in_totals)  # 2 != 3 on baf342c


def _fold_lock(schema: str) -> psycopg.Connection:
    conn = psycopg.connect(POSTGRES_URL.split("?")[0])
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kling_cost:{schema}:rollup",))
    return conn


@pytest.mark.postgres
def test_a_closed_ledger_keeps_no_thread_or_connection_and_never_folds_afterwards(pg_url: str) -> None:
    """README: "Closing a ledger stops its thread at once, even with the server gone".
    ``Folder.close`` only joins the thread for 1 s. A fold that waits on the fold lock (another
    process's fold of a big backlog: "about 7 s" for 200,000 charges; or a stuck one) keeps
    its thread, the closed ledger and one server connection after ``close()`` returned, and
    when the lock comes free it folds: the closed ledger writes. (A fold blocked on a
    black-holed server, tried by hand, stays forever.) The background fold could take the
    lock with ``pg_try_advisory_xact_lock`` (another fold is under way: nothing to do) or the
    close cancel the statement in flight."""
    # only this ledger's connections are counted: other tests (other xdist workers) on the
    # same server may wait on an advisory lock of their own at that moment
    name = f"fold-close-{uuid.uuid4().hex[:8]}"
    led = open_ledger(f"{pg_url}&application_name={name}", fold_interval=0.05)
    schema = led.backend.schema  # type: ignore[attr-defined]
    led.set_budget("project:a", 100)
    led.commit(led.reserve("1", ["project:a"]), actual="1")
    time.sleep(0.3)  # the thread runs and has folded
    locker = _fold_lock(schema)  # "another process folds"
    try:
        led.commit(led.reserve("1", ["project:a"]), actual="1")
        time.sleep(0.3)  # the thread's fold now waits on the lock
        led.close()
        time.sleep(0.5)
        alive = [
            t for t in threading.enumerate() if t.name.startswith("kling-cost-rollup") and schema in t.name
        ]
        with psycopg.connect(POSTGRES_URL.split("?")[0]) as probe:
            waiting = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s AND application_name = %s",
                ("%pg_advisory_xact_lock%", name),
            ).fetchone()[0]
    finally:
        locker.rollback()
        locker.close()
    time.sleep(0.5)
    with open_ledger(pg_url, fold_interval=None) as check, check.transaction() as cur:
        cur.execute("SELECT count(*) FROM rollup_pending")
        still_noted = cur.fetchone()[0]
    assert not alive, "the fold thread outlived close()"
    assert waiting == 0, "the closed ledger still holds a server connection"
    assert still_noted == 1, "the closed ledger folded after close() returned"


@pytest.mark.parametrize("password", ["Zq9#Xw7Secret", "Zq9?Xw7Secret", "Zq9?x#y=z&Xw7Secret"])
def test_a_password_with_hash_or_question_mark_is_read_as_libpq_reads_it_and_never_shown(
    password: str,
) -> None:
    """libpq (and psql) take ``#`` and ``?`` in a URI's password literally. ``urlsplit`` cut
    the URL there instead, so ``redact_url`` found no password to mask and ``open_ledger``
    raised ``StorageError: cannot reach the PostgreSQL ledger at
    postgresql://postgres:Zq9#Xw7Secret@...``: the whole password in the error (logs, CLI
    stderr). Now the ledger reads the URL as libpq does, and errors mask the password."""
    url = f"postgresql://postgres:{password}@127.0.0.1:1/test?schema=atk_pw"
    conninfo, schema = _parse_url(url)
    assert conninfo_to_dict(conninfo)["password"] == password and schema == "atk_pw"
    assert "Xw7Secret" not in redact_url(url)
    with pytest.raises(KlingCostError) as raised:  # port 1: nothing listens
        open_ledger(url, connect_timeout=2, fold_interval=None)
    assert "Xw7Secret" not in str(raised.value) and "postgres:***@127.0.0.1:1" in str(raised.value)


def test_nothing_after_a_hash_in_the_url_query_is_dropped_silently() -> None:
    """libpq reads ``#`` in a URI query value literally (``application_name=a#b`` is
    ``a#b``). ``_parse_url`` takes it for a fragment and drops it with everything after it,
    without a word: ``?password=p#q&schema=tenant_b`` opens the schema ``kling_cost`` (the
    default) with the password ``p``; the ledger then enforces budgets against another
    ledger's counters. It should keep the text (as libpq does) or refuse the URL."""
    conninfo, schema = _parse_url("postgresql://u@h/db?application_name=a#b&schema=tenant_b")
    assert (conninfo_to_dict(conninfo).get("application_name"), schema) == ("a#b", "tenant_b")


def test_a_decimal_fold_interval_in_range_is_not_refused_as_out_of_range(tmp_path: Path) -> None:
    """``fold_interval=Decimal("2")`` (the package's own number type for amounts) raises
    ConfigurationError "fold_interval must be 0.01 to 86400 seconds ..., not Decimal('2')":
    2 is in that range. (So do ``Fraction`` and numpy integers.) Either take any real number
    in range or say that the type is the problem."""
    try:
        led = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", fold_interval=Decimal("2"))
    except KlingCostError as exc:
        assert "0.01 to 86400" not in str(exc), str(exc)
    else:
        led.close()
