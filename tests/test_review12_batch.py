"""Outside review of issue 12's ``batch run`` (what a new user or an attacker hits)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger
from tests.helpers import fresh_postgres_url, need_postgres
from tests.terminal import simulator

pytestmark = pytest.mark.slow


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


@pytest.mark.postgres
def test_resume_and_settle_commands_never_print_the_ledger_password(tmp_path: Path) -> None:
    """The resume command is printed to the terminal (and CI logs): a PostgreSQL password given
    with --ledger must not be in it (the project shows ledger URLs as ``user:***@``)."""
    need_postgres()
    url = _with_password(fresh_postgres_url(), "s3cr3t-pw")  # trust auth: any password connects
    try:
        with open_ledger(url) as led:
            led.set_budget("account", Decimal(100), unit="credits")
        prompts = tmp_path / "shots.txt"
        prompts.write_text("".join(f"shot {i}: a fox in the snow\n" for i in range(4)))
        with simulator("--task-seconds", "0.2", "--failure-rate", "0") as (base, env):
            args = ["batch", "run", str(prompts), "--mode", "pro", "--duration", "10"]
            args += ["--catalog", "kling-app-credits", "--base-url", base, "--ledger", url]
            args += ["--poll", "0.05", "--yes"]
            for extra in ([], ["--json"]):
                proc = subprocess.run(
                    [sys.executable, "-m", "kling_cost", *args, *extra],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert proc.returncode == 0, proc.stderr
                assert "not sent" in proc.stdout or "resume" in proc.stdout  # a resume command is shown
                assert "s3cr3t-pw" not in proc.stdout + proc.stderr
                assert "postgres:***@" in proc.stdout
                if not extra:
                    assert "password is shown as ***" in proc.stdout
    finally:
        with open_ledger(url) as cleanup:
            cleanup.drop_schema()  # type: ignore[attr-defined]
