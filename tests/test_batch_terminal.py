"""``kling-cost batch run`` as a person runs it, on both ledger backends: on a real terminal
against ``kling-cost simulate`` in its own process (issue 12, items 2, 3 and 6).

- Ctrl-C once: it says at once what it is doing, stops sending, settles what runs, prints the
  summary and the command that resumes; that command finishes the batch.
- Ctrl-C twice: it leaves the running tasks (their holds stay), prints the summary and the
  ``kling-cost settle`` command, exits 130; settle and the resume command finish the job.
- Failed tasks are refunded and the room they free is used in the same run: the budget is
  filled (as many 70-credit clips as fit in 500 credits), in one run.

Nothing is lost (every task Kling ran is charged) and nothing is charged twice (no row is sent
twice) in any of them.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix
from tests.terminal import cli, command_args, kling_tasks, simulator, terminal, wait_all_ended

pytestmark = pytest.mark.slow

PER_CLIP = Decimal(70)  # kling-app-credits: 10 s professional
LIMIT = Decimal(500)
FITS = int(LIMIT // PER_CLIP)  # 7


def _batch(prompts: Path, base: str, ledger: str, *extra: str) -> list[str]:
    return [
        "batch",
        "run",
        str(prompts),
        "--mode",
        "pro",
        "--duration",
        "10",
        "--catalog",
        "kling-app-credits",
        "--base-url",
        base,
        "--ledger",
        ledger,
        "--poll",
        "0.1",
        *extra,
    ]


def _budget(ledger: str) -> None:
    with open_ledger(ledger) as led:
        led.set_budget("account", LIMIT, unit="credits")


def _prompts(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "shots.txt"
    path.write_text(
        "# shots of the fox film\n" + "".join(f"shot {i}: a fox in the snow\n" for i in range(count))
    )
    return path


def _wait_running(ledger: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    """Until ``count`` rows are sent and held (tasks running at Kling)."""
    with open_ledger(ledger) as led:
        deadline = time.monotonic() + 20
        while sum(1 for r in led.reservations(status="reserved") if r.task_id) < count:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)


def _no_loss_no_double(base: str, ledger: str) -> list[dict[str, object]]:
    """Every task Kling ran is settled in the ledger, once; no row was sent twice."""
    tasks = wait_all_ended(base)
    externals = [t["task_info"]["external_task_id"] for t in tasks]  # type: ignore[index]
    assert len(externals) == len(set(externals)), "a row was sent twice"
    ran = [t for t in tasks if t["task_status"] == "succeed"]
    with open_ledger(ledger) as led:
        assert led.reservations(status="reserved") == []
        usage = led.usage("account")
        assert usage.unit == "credits" and usage.reserved == 0
        assert usage.used == PER_CLIP * len(ran) <= LIMIT
        charged = sorted(c.task_id or "" for c in led.charges() if c.status == "succeeded")
        assert charged == sorted(str(t["task_id"]) for t in ran)
    return ran


def test_first_ctrl_c_settles_what_runs_then_prints_summary_and_resume_command(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    with simulator("--task-seconds", "2", "--failure-rate", "0", "--concurrency", "5") as (base, env):
        _budget(ledger_url)
        prompts = _prompts(tmp_path, 12)
        with terminal(_batch(prompts, base, ledger_url), env) as term:
            # item 3: the approval prompt says what fits, with the unit
            term.expect(
                re.escape(
                    "12 requests, 840 credits; 7 fit in today's budget of 500 credits (account): run them? [y/N]"
                )
            )
            term.send("y\r")
            _wait_running(ledger_url, 3, term.proc)
            term.ctrl_c()
            said = term.expect(
                r"stopping: (\d+) tasks? still running at Kling, waiting for (?:them|it) to settle; "
                r"Ctrl-C again to leave (?:them|it) to `kling-cost settle`",
                timeout=2,
            )
            assert term.proc.poll() is None, "the message comes before the wait, not after it"
            assert int(said[1]) >= 3
            assert term.wait() == 130
            out = term.text
        assert "Batch summary" in out and "interrupted (running tasks settled)" in out
        resume = re.search(r"rows? not sent\. Resume with:\n +(kling-cost batch run .+)\n", out)
        assert resume, out
        assert command_args(resume[1])[:3] == ["batch", "run", str(prompts)]
        sent_before = len(kling_tasks(base))
        assert 3 <= sent_before < 12
        with open_ledger(ledger_url) as led:  # every task that ran was settled before the exit
            assert led.reservations(status="reserved") == []
            assert led.usage("account").used == PER_CLIP * sent_before

        with terminal(command_args(resume[1]), env) as term:  # the printed command, as printed
            term.expect(r"run them\? \[y/N\]")
            term.send("y\r")
            assert term.wait() == 0
            assert "stopped: nothing more fits" in term.text
        ran = _no_loss_no_double(base, ledger_url)
        assert len(ran) == FITS


def test_second_ctrl_c_leaves_running_tasks_to_settle_and_exits_130(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    with simulator("--task-seconds", "4", "--failure-rate", "0", "--concurrency", "5") as (base, env):
        _budget(ledger_url)
        prompts = _prompts(tmp_path, 12)
        with terminal(_batch(prompts, base, ledger_url, "--yes"), env) as term:
            _wait_running(ledger_url, 3, term.proc)
            term.ctrl_c()
            term.expect(r"stopping: \d+ tasks? still running at Kling", timeout=2)
            term.ctrl_c()
            left = term.expect(r"leaving (\d+) tasks? running at Kling", timeout=2)
            started = time.monotonic()
            assert term.wait(10) == 130
            assert time.monotonic() - started < 3, "it left at once, without waiting for the tasks"
            out = term.text
        assert "Batch summary" in out
        settle = re.search(r"Settle them with:\n +(kling-cost settle .+)\n", out)
        resume = re.search(r"sends the rest\) with:\n +(kling-cost batch run .+)\n", out)
        assert settle and resume, out
        assert command_args(settle[1]) == ["settle", "--base-url", base, "--ledger", ledger_url]
        with open_ledger(ledger_url) as led:  # their holds stay, leased, with their tasks
            held = led.reservations(status="reserved")
            assert len(held) == int(left[1]) and all(r.task_id for r in held)
            assert {(r.unit, r.amount) for r in held} == {("credits", PER_CLIP)}

        wait_all_ended(base)
        assert "errors 0" in cli(env, *command_args(settle[1]))
        with open_ledger(ledger_url) as led:
            assert led.reservations(status="reserved") == []
        cli(env, *command_args(resume[1]))  # it was typed with --yes: it runs to the end
        ran = _no_loss_no_double(base, ledger_url)
        assert len(ran) == FITS


def test_refunded_failures_make_room_and_the_budget_fills_in_one_run(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A third of the tasks fail (seeded); each refund lets a waiting row in: one run spends
    exactly what fits (7 x 70 of 500 credits), and only then is a row refused."""
    options = ("--task-seconds", "0.6", "--failure-rate", "0.35", "--seed", "4", "--concurrency", "5")
    with simulator(*options) as (base, env):
        _budget(ledger_url)
        prompts = _prompts(tmp_path, 20)
        proc = subprocess.run(
            [sys.executable, "-m", "kling_cost", *_batch(prompts, base, ledger_url, "--yes")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        ran = _no_loss_no_double(base, ledger_url)
        failed = [t for t in kling_tasks(base) if t["task_status"] == "failed"]
    assert len(ran) == FITS and len(failed) >= 2, (ran, failed)  # refunds happened, and were used
    with open_ledger(ledger_url) as led:
        assert led.usage("account").used == PER_CLIP * FITS  # 490 of 500: nothing more fits
    assert "stopped submitting: Day budget exceeded on account" in proc.stdout
    assert re.search(r"\d+ rows? not sent; run the same command when the budget has room", proc.stdout)
    # item 6: the finished bar says how the run ended, not the last row's status
    assert "stopped: nothing more fits" in proc.stderr and "line " not in proc.stderr.splitlines()[-1]


def test_sigterm_stops_like_a_first_ctrl_c_and_a_second_leaves(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A service manager's SIGTERM (``docker stop``, systemd) is the same two-step stop as
    Ctrl-C, named as what it was, and the exit code is 143 as a shell reports SIGTERM."""
    with simulator("--task-seconds", "2", "--failure-rate", "0", "--concurrency", "5") as (base, env):
        _budget(ledger_url)
        prompts = _prompts(tmp_path, 12)
        with terminal(_batch(prompts, base, ledger_url, "--yes"), env) as term:
            _wait_running(ledger_url, 3, term.proc)
            term.proc.send_signal(signal.SIGTERM)
            term.expect(
                r"stopping \(SIGTERM\): \d+ tasks? still running at Kling, waiting for (?:them|it) to "
                r"settle; SIGTERM again to leave (?:them|it) to `kling-cost settle`",
                timeout=2,
            )
            assert term.wait() == 143
            out = term.text
        assert "Batch summary" in out and "interrupted (running tasks settled)" in out
        assert re.search(r"Resume with:\n +kling-cost batch run ", out), out
        sent = len(kling_tasks(base))
        with open_ledger(ledger_url) as led:  # every task that ran was settled before the exit
            assert led.reservations(status="reserved") == []
            assert led.usage("account").used == PER_CLIP * sent

        (tmp_path / "again").mkdir()
        prompts2 = _prompts(tmp_path / "again", 12)
        with terminal(_batch(prompts2, base, ledger_url, "--yes"), env) as term:
            _wait_running(ledger_url, 1, term.proc)
            term.proc.send_signal(signal.SIGTERM)
            term.expect(r"stopping \(SIGTERM\)", timeout=2)
            term.proc.send_signal(signal.SIGTERM)
            term.expect(r"leaving \d+ tasks? running at Kling", timeout=2)
            assert term.wait(10) == 143
            assert re.search(r"Settle them with:\n +kling-cost settle ", term.text), term.text


def test_task_timeout_leaves_slow_tasks_to_settle_and_exits_1(
    ledger_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``--task-timeout``: a task that has not ended in time makes its row an error (exit 1,
    the line named), its hold stays for ``kling-cost settle``, which charges it once."""
    with simulator("--task-seconds", "3", "--failure-rate", "0", "--concurrency", "5") as (base, env):
        _budget(ledger_url)
        prompts = _prompts(tmp_path, 2)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "kling_cost",
                *_batch(prompts, base, ledger_url, "--yes", "--task-timeout", "1"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert re.search(r"line 2: task \S+ did not end within 1 s", proc.stderr), proc.stderr
        with open_ledger(ledger_url) as led:
            held = led.reservations(status="reserved")
            assert len(held) == 2 and all(r.task_id for r in held)
        settle = re.search(
            r"2 tasks sent but not seen to end \(held until settled\); settle when Kling has finished "
            r"with:\n +(kling-cost settle .+)\n",
            proc.stdout,
        )
        assert settle, proc.stdout
        assert command_args(settle[1]) == ["settle", "--base-url", base, "--ledger", ledger_url]
        wait_all_ended(base)
        assert "errors 0" in cli(env, *command_args(settle[1]))
        ran = _no_loss_no_double(base, ledger_url)
        assert len(ran) == 2
