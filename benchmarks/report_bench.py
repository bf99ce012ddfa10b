"""Reports at scale: ``report --by day,model --since 365d`` and the dashboard's overview call.

Run from the repository root, in the project's virtualenv::

    python benchmarks/report_bench.py [--quick] [--charges N] [--runs N]

Generates N charges (default 1,000,000; ``--quick``: 100,000) spread over 365 days in a
fresh SQLite ledger, inserted in bulk with ``executemany`` together with the report rollup
they imply (built exactly as the ledger's hook would; the generation is timed on its own).
Then times, p50 over ``--runs``:

* ours: :func:`kling_cost.reports.report` with ``by=day,model, since=365d`` (what
  ``kling-cost report`` calls), and ``GET /api/overview`` and ``GET /api/glance`` (today
  against yesterday, the 5 costliest of 5,000 prompts over 30 days, the closest budget)
  through the dashboard's ASGI app;
* the baseline: the same aggregation (local day x model: count, estimates, actuals) as one
  plain ``GROUP BY`` over the charges table with raw ``sqlite3``.

Goal: report, overview and glance under 200 ms p50. Prints the ratio baseline/ours (> 1: faster).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kling_cost.ledger import open_ledger
from kling_cost.ledger.rollup import KEY_COLUMNS, SUM_COLUMNS, rollup_rows, rollup_values
from kling_cost.reports import report
from kling_cost.web import create_dashboard_app

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MODELS = ["kling-v2-6", "kling-v2-5-turbo", "kling-v2-1", "kling-v2-master", "kling-v1-6", "kling-v1"]
MODES = ["std", "pro"]
PROJECTS = [f"project:p{i}" for i in range(5)]
KEYS = [f"key:k{i}" for i in range(20)]
GOAL_MS = 200.0
PROMPTS = 5000


def generate(path: str, n: int, seed: int = 7) -> float:
    rng = random.Random(seed)
    start_ms = int((NOW - timedelta(days=365)).timestamp() * 1000)
    span = 365 * 86_400_000
    rows: list[tuple[Any, ...]] = []
    rollup: dict[tuple[Any, ...], list[int]] = {}
    width = len(KEY_COLUMNS)
    t0 = time.perf_counter()
    for i in range(n):
        created = start_ms + rng.randrange(span)
        model, mode = rng.choice(MODELS), rng.choice(MODES)
        duration = rng.choice((5, 10))
        estimate = duration * (7000 if mode == "pro" else 4000)
        roll = rng.random()
        status = "succeeded" if roll < 0.9 else ("failed" if roll < 0.97 else "cache_hit")
        actual = estimate + rng.choice((0, 0, 0, 500, -500)) if status == "succeeded" else 0
        scopes = ("account", rng.choice(KEYS), rng.choice(PROJECTS))
        rows.append(
            (
                f"r{i}",
                f"r{i}",
                status,
                created,
                created + 60_000,
                estimate,
                actual,
                json.dumps(sorted(scopes)),
                f"task-{i}",
                "text2video",
                model,
                mode,
                duration,
                0,
                f"hash-{i % PROMPTS}",
                f"prompt {i % PROMPTS}",
                "{}",
            )
        )
        values = rollup_values(status, created, estimate, actual, model, mode, "units")
        for row in rollup_rows(scopes, values):  # both grains, as the ledger's hook writes them
            acc = rollup.setdefault(row[:width], [0] * len(SUM_COLUMNS))
            for j, v in enumerate(row[width:]):
                acc[j] += v
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO charges (reservation_id, idempotency_key, status, created_at, settled_at, "
        "estimate_milli, actual_milli, scopes, task_id, kind, model, mode, duration, audio, "
        "prompt_hash, prompt_preview, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO report_rollup ("
        + ", ".join((*KEY_COLUMNS, *SUM_COLUMNS))
        + ") VALUES ("
        + ", ".join("?" * (width + len(SUM_COLUMNS)))
        + ")",
        [(*k, *v) for k, v in rollup.items()],
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - t0


def p50(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 charges")
    parser.add_argument("--charges", type=int, default=None)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    n = args.charges or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "bench.db")
        url = f"sqlite:///{path}"
        ledger = open_ledger(url, clock=lambda: NOW)
        ledger.set_budget("account", 5_000_000, "day")
        ledger.set_budget("project:p0", 1_000_000, "month")
        ledger.close()
        gen = generate(path, n)
        ledger = open_ledger(url, clock=lambda: NOW)
        rep = report(ledger, "day,model", since="365d", now=NOW)
        since_ms = int(rep.since.timestamp() * 1000) if rep.since else 0
        ours = p50(lambda: report(ledger, "day,model", since="365d", now=NOW), args.runs)
        from starlette.testclient import TestClient

        client = TestClient(create_dashboard_app(ledger), base_url="http://127.0.0.1")  # the Host rule
        resp = client.get("/api/overview")
        resp.raise_for_status()
        overview_ms = p50(lambda: client.get("/api/overview").raise_for_status(), args.runs)
        top = client.get("/api/glance").raise_for_status().json()["top_prompts"]
        assert len(top) == 5 and all(p["prompt_hash"].startswith("hash-") for p in top), top
        glance_ms = p50(lambda: client.get("/api/glance").raise_for_status(), args.runs)
        raw = sqlite3.connect(path)

        def baseline() -> list[Any]:
            return raw.execute(
                "SELECT (created_at + 0) / 86400000 AS d, model, COUNT(*), SUM(estimate_milli), "
                "SUM(actual_milli) FROM charges WHERE created_at >= ? GROUP BY d, model",
                (since_ms,),
            ).fetchall()

        base_rows = baseline()
        base = p50(baseline, max(3, args.runs // 3))
        assert len(base_rows) == len(rep.rows), (len(base_rows), len(rep.rows))
        assert sum(r[4] for r in base_rows) == int(rep.total_for("units").actual * 1000)
        raw.execute("SELECT COUNT(*) FROM report_rollup")
        rollup_rows = raw.execute("SELECT COUNT(*) FROM report_rollup").fetchone()[0]
        raw.close()
        ledger.close()
    print(f"charges: {n:,} over 365 days; rollup rows: {rollup_rows:,}; generation {gen:.1f} s")
    print(f"report --by day,model --since 365d (source={rep.source}, {len(rep.rows)} rows)")
    print(
        f"  ours p50      {ours:8.1f} ms   goal < {GOAL_MS:.0f} ms: {'MET' if ours < GOAL_MS else 'NOT MET'}"
    )
    print(f"  baseline p50  {base:8.1f} ms   (one GROUP BY over charges)")
    print(f"  ratio baseline/ours {base / ours:6.1f}x")
    print(f"GET /api/overview p50 {overview_ms:8.1f} ms   goal < {GOAL_MS:.0f} ms: ", end="")
    print("MET" if overview_ms < GOAL_MS else "NOT MET")
    print(f"  ratio baseline/overview {base / overview_ms:6.1f}x")
    print(f"GET /api/glance p50   {glance_ms:8.1f} ms   goal < {GOAL_MS:.0f} ms: ", end="")
    print("MET" if glance_ms < GOAL_MS else "NOT MET")


if __name__ == "__main__":
    main()
