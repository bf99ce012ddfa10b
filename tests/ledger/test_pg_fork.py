"""A PostgreSQL ledger across ``fork``: a forked child shares its parent's pooled connections
(and the connection the one-statement calls keep, ``pg_spare.py``): the same sockets. The
child is refused (StorageError, as for SQLite) and its ``close()`` leaves the parent's
sessions alone. Regression test: it failed before the fix (the child reserved on the
parent's socket; used at the same time, both processes hung; its close ended the parent's
sessions)."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import POSTGRES_URL, run_python

pytestmark = pytest.mark.postgres


def test_a_forked_child_is_refused_and_leaves_its_parents_connections_alone(pg_url: str) -> None:
    name = f"fork-{uuid.uuid4().hex[:8]}"
    script = f"""
        import os, psycopg
        from kling_cost.ledger import open_ledger
        from kling_cost.errors import StorageError

        def sessions():
            with psycopg.connect({POSTGRES_URL.split("?")[0]!r}, autocommit=True) as admin:
                rows = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", ({name!r},)
                ).fetchall()
            return sorted(pid for (pid,) in rows)

        ledger = open_ledger({pg_url + "&application_name=" + name!r}, fold_interval=None)
        ledger.set_budget("project:a", 100)
        ledger.commit(ledger.reserve(1, ["project:a"]), 1)  # the calls now keep a connection
        ledger.usage("project:a")
        before = sessions()
        pid = os.fork()
        if pid == 0:
            try:
                ledger.commit(ledger.reserve(1, ["project:a"]), 1)
                print("child: reserved", flush=True)
            except StorageError as exc:
                print("child refused:", "forked" in str(exc), flush=True)
            ledger.close()
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent sessions kept:", sessions() == before, flush=True)
        ledger.commit(ledger.reserve(1, ["project:a"]), 1)
        print("parent used 2:", ledger.usage("project:a").used == 2, flush=True)
        ledger.close()
    """
    done = run_python(script, timeout=60)
    out = done.stdout + done.stderr[-2000:]
    assert "child refused: True" in out, out
    assert "parent sessions kept: True" in out, out
    assert "parent used 2: True" in out, out
