"""Startup time of the package and the CLI: whole processes, as a user's shell runs them.

Run from the repository root, in the project's virtualenv::

    python benchmarks/cli_startup.py [--runs N] [--libraries] [--json] [--check]

Times, over ``--runs`` runs each (default 30, after 2 warm-up runs), the wall-clock time from
spawning a process to its exit, and the CPU time it used (user + system):

* the baseline: ``python -c pass`` (the interpreter alone, measured in the same run);
* ``python -c "import kling_cost"``;
* ``kling-cost --help``;
* ``kling-cost estimate --model kling-v2-6 --mode std --duration 5``;
* ``kling-cost usage`` on an empty SQLite ledger (created before the runs);
* with ``--libraries``, the floor under the CLI: ``import typer``, ``import click``,
  ``import rich.console`` and ``import pydantic`` on their own (Typer 0.2x carries its own
  copy of Click; rich and pydantic are what its rich help and its value checks would load).

The commands run round-robin (one run of each, then the next round), so a machine shared with
other work slows them alike and the ratios to the baseline stay meaningful; the minimum is
what an idle machine would show. Bytecode is written as on a user's machine (an inherited
``PYTHONDONTWRITEBYTECODE`` would have every run compile the package again). Prints, per
command, the median, 90th percentile and minimum wall time, the median's ratio to the
baseline's, the median CPU time, and the goal (medians: ``import kling_cost`` <= 100 ms,
``--help`` <= 150 ms, ``estimate`` <= 200 ms) with pass or FAIL. ``--check`` exits 1 when a
goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    goal_ms: float | None = None


@dataclass(frozen=True)
class Run:
    wall_ms: float
    cpu_ms: float


def kling_cost_command() -> list[str]:
    """The ``kling-cost`` script installed beside this interpreter (what a user runs), else
    ``python -m kling_cost``."""
    script = Path(sys.executable).with_name("kling-cost")
    if script.exists():
        return [str(script)]
    found = shutil.which("kling-cost")
    return [found] if found else [sys.executable, "-m", "kling_cost"]


def cases(libraries: bool) -> list[Case]:
    cli = kling_cost_command()
    py = sys.executable
    out = [
        Case("python -c pass", [py, "-c", "pass"]),
        Case("import kling_cost", [py, "-c", "import kling_cost"], 100.0),
        Case("kling-cost --help", [*cli, "--help"], 150.0),
        Case(
            "kling-cost estimate",
            [*cli, "estimate", "--model", "kling-v2-6", "--mode", "std", "--duration", "5"],
            200.0,
        ),
        Case("kling-cost usage (empty ledger)", [*cli, "usage"]),
    ]
    if libraries:
        out += [
            Case("import typer", [py, "-c", "import typer"]),
            Case("import click", [py, "-c", "import click"]),
            Case("import rich.console", [py, "-c", "import rich.console"]),
            Case("import pydantic", [py, "-c", "import pydantic"]),
        ]
    return out


def run_once(case: Case, env: dict[str, str]) -> Run:
    """One process of ``case``: its wall time and CPU time; a failing command stops the benchmark."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(case.argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - start) * 1000
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            message = err.read().decode(errors="replace")
            raise SystemExit(f"{case.name} exited {proc.returncode}: {message}")
    return Run(wall, (usage.ru_utime + usage.ru_stime) * 1000)


def measure(todo: list[Case], runs: int, warmup: int = 2) -> dict[str, list[Run]]:
    with tempfile.TemporaryDirectory(prefix="kling-cost-startup-") as tmp:
        env = {**os.environ, "KLING_COST_LEDGER": f"sqlite:///{Path(tmp) / 'empty.db'}"}
        for name in ("PYTHONDONTWRITEBYTECODE", "KLING_COST_DEBUG"):
            env.pop(name, None)
        subprocess.run([*kling_cost_command(), "ledger", "migrate"], env=env, check=True, capture_output=True)
        times: dict[str, list[Run]] = {case.name: [] for case in todo}
        for round_ in range(warmup + runs):
            for case in todo:
                result = run_once(case, env)
                if round_ >= warmup:
                    times[case.name].append(result)
        return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summarise(todo: list[Case], times: dict[str, list[Run]]) -> list[dict[str, object]]:
    base = statistics.median(r.wall_ms for r in times["python -c pass"])
    rows: list[dict[str, object]] = []
    for case in todo:
        wall = [r.wall_ms for r in times[case.name]]
        median = statistics.median(wall)
        rows.append(
            {
                "command": case.name,
                "median_ms": round(median, 1),
                "p90_ms": round(percentile(wall, 0.9), 1),
                "min_ms": round(min(wall), 1),
                "ratio_to_python": round(median / base, 2),
                "cpu_median_ms": round(statistics.median(r.cpu_ms for r in times[case.name]), 1),
                "goal_ms": case.goal_ms,
                "meets_goal": None if case.goal_ms is None else median <= case.goal_ms,
            }
        )
    return rows


def print_table(rows: list[dict[str, object]], runs: int, load: tuple[float, float]) -> None:
    print(
        f"{runs} runs each, round-robin; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"1-min load average {load[0]:.2f} before, {load[1]:.2f} after"
    )
    print(f"{'command':32} {'median':>8} {'p90':>8} {'min':>8} {'x pass':>7} {'cpu':>8}  goal (median)")
    for r in rows:
        goal = "" if r["goal_ms"] is None else f"<= {r['goal_ms']:.0f} ms "
        verdict = "" if r["meets_goal"] is None else ("pass" if r["meets_goal"] else "FAIL")
        print(
            f"{r['command']:32} {r['median_ms']:6.1f}ms {r['p90_ms']:6.1f}ms {r['min_ms']:6.1f}ms "
            f"{r['ratio_to_python']:6.2f}x {r['cpu_median_ms']:6.1f}ms  {goal}{verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="Startup time of kling_cost and kling-cost.")
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    parser.add_argument(
        "--libraries", action="store_true", help="also time typer, click, rich and pydantic alone"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    todo = cases(args.libraries)
    before = os.getloadavg()[0]
    times = measure(todo, args.runs)
    load = (round(before, 2), round(os.getloadavg()[0], 2))
    rows = summarise(todo, times)
    if args.json:
        info = {"runs": args.runs, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
        print(json.dumps({**info, "load_average_1min": load, "results": rows}, indent=2))
    else:
        print_table(rows, args.runs, load)
    return 1 if args.check and any(r["meets_goal"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
