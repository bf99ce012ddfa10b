"""The demo: a simulated Kling, a fresh ledger, a small budget, a batch that meets its ceiling."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .alerts import CallbackSink, Deliverer
from .batch import BatchResult, BatchRunner, BatchSummary, plan_batch
from .batch.rows import BatchRow
from .cache import CachePolicy
from .errors import ConfigurationError
from .guard import CostAwareClient
from .kling import KlingClient, RetryPolicy
from .ledger import Ledger

__all__ = ["DEMO_PROMPTS", "DemoResult", "run_demo", "simulated_kling"]

FAILING_PROMPT = "a glitching test pattern (Kling fails this one; it costs nothing)"

DEMO_PROMPTS = [
    "a red fox trotting through fresh snow at dawn",
    "a lighthouse in a storm, waves crashing, cinematic",
    "a paper boat drifting down a rainy street",
    "a hummingbird hovering over a purple flower, macro",
    "a red fox trotting through fresh snow at dawn",  # a duplicate: served from the cache
    "neon city street at night, rain reflections",
    "an astronaut planting a flag on a green planet",
    "a steaming cup of coffee on a windowsill",
    "koi fish circling in a clear pond",
    "a hot-air balloon over a misty valley",
    "a train crossing a stone viaduct in autumn",
    "waves rolling onto a black sand beach",
]


@dataclass
class DemoResult:
    """What the demo did, for the CLI to show."""

    ledger_url: str
    kling_url: str
    plan_total: Decimal
    summary: BatchSummary
    stop_reason: str | None
    failed_lines: list[int] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    """The alert messages delivered during the run (thresholds crossed, refusal)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulated_kling(**settings: Any) -> Iterator[tuple[str, Any, str, str]]:
    """Run the simulator on a free loopback port in a thread; yields (url, simulator, ak, sk)."""
    try:
        import uvicorn

        from .simulator import create_app
    except ImportError as exc:
        raise ConfigurationError(
            "the demo needs the server extra: pip install 'klingai-cost-controls[server]'"
        ) from exc
    ak, sk = "demo-access-key", "demo-secret-key-0123456789-abcdefghijklmnop"
    app = create_app(ak, sk, **settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kling-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise ConfigurationError("the simulator did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", app.state.simulator, ak, sk
    finally:
        server.should_exit = True
        thread.join(10)


def run_demo(
    ledger: Ledger,
    *,
    budget: Decimal = Decimal(12),
    prompts: list[str] | None = None,
    task_seconds: float = 1.0,
    on_result: Callable[[BatchResult], None] | None = None,
    on_plan: Callable[[Any], None] | None = None,
) -> DemoResult:
    """Set a small daily budget, run a batch of ``kling-v2-6`` 5 s clips against a simulated
    Kling until the budget refuses; one task fails (and is refunded) and one prompt repeats
    (and is served from the cache)."""
    texts = prompts or DEMO_PROMPTS
    ledger.set_budget("project:demo", budget, "day", thresholds=["0.5", "0.8", "1"], unit="units")
    rows = [
        BatchRow(
            i + 1,
            "text2video",
            {
                "prompt": p,
                "model_name": "kling-v2-6",
                "mode": "std",
                "duration": "5",
                "external_task_id": f"demo-{i + 1}",
            },
            f"demo-{i + 1}",
        )
        for i, p in enumerate(texts)
    ]
    plan = plan_batch([{"endpoint": r.endpoint, **r.body} for r in rows], ledger, ["project:demo"])
    if on_plan is not None:
        on_plan(plan)
    settings = {"task_seconds": task_seconds, "failure_rate": 0, "concurrency": 5, "seed": 7}
    with simulated_kling(**settings) as (url, sim, ak, sk):
        client = KlingClient(ak, sk, base_url=url, retry=RetryPolicy(base_delay=0.2))
        with CostAwareClient(
            client, ledger, scopes=["project:demo"], cache=CachePolicy(wait_poll=0.1)
        ) as guard:
            # one task that Kling fails: reserved, then released (Kling charges nothing)
            doomed = guard.text_to_video(
                FAILING_PROMPT,
                model_name="kling-v2-6",
                mode="std",
                duration=5,
                external_task_id="demo-failing",
            )
            sim.state.fail_task(doomed.task_id, "the simulator failed this task on purpose")
            ended = guard.wait(doomed, poll=0.2, timeout=60)
            failed = BatchResult(0, "demo-failing", "failed", ended.task_id, error=ended.task_status_msg)
            if on_result is not None:
                on_result(failed)
            runner = BatchRunner(guard, rows, concurrency=3, poll=0.2, on_result=on_result)
            summary = runner.run()
            summary.results.insert(0, failed)
    alerts: list[str] = []
    with Deliverer(ledger, CallbackSink(alerts.append, text=True, resolved=False)) as deliverer:
        deliverer.deliver_pending()
    return DemoResult(
        ledger_url=ledger.url,
        kling_url=url,
        plan_total=plan.total,
        summary=summary,
        stop_reason=runner.stop_reason,
        failed_lines=[r.line for r in summary.results if r.status == "failed"],
        alerts=alerts,
    )
