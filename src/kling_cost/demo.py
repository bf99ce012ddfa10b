"""The demo: a simulated Kling, a fresh ledger, a small budget, a batch that meets its ceiling.

Its ledger is a file of its own, ``demo.db`` beside the default ledger in the user data
directory (:func:`demo_ledger_url`), replaced by each demo and kept afterwards, so ``kling-cost
report --ledger <that URL>`` and ``kling-cost serve --ledger <that URL>`` show what it did. It
never writes into the default ledger, where a user's real spending is.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from .alerts import CallbackSink, Deliverer
from .batch import BatchResult, BatchRunner, BatchSummary, plan_batch
from .batch.rows import BatchRow
from .cache import CachePolicy
from .errors import ConfigurationError
from .guard import CostAwareClient
from .kling import KlingClient, RetryPolicy
from .kling.tasks import AnyTask
from .ledger import Ledger

__all__ = ["DEMO_PROMPTS", "DemoResult", "demo_ledger_path", "demo_ledger_url", "run_demo", "simulated_kling"]

FAILING_PROMPT = "a glitching test pattern (Kling fails this one; it costs nothing)"

DEMO_PROMPTS = [
    "a red fox trotting through fresh snow at dawn",
    "a lighthouse in a storm, waves crashing, cinematic",
    FAILING_PROMPT,  # the simulator fails it: reserved, then released (Kling charges nothing)
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


def demo_ledger_path() -> Path:
    """``demo.db`` in the user data directory (beside the default ledger, never it)."""
    import platformdirs

    folder = Path(platformdirs.user_data_dir("kling-cost", appauthor=False))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the demo's ledger directory {folder}: {exc}; pass --ledger"
        ) from None
    return folder / "demo.db"


def demo_ledger_url(*, fresh: bool = False) -> str:
    """The demo's own SQLite ledger; ``fresh=True`` first removes what an earlier demo left
    there (only that file and its WAL companions)."""
    path = demo_ledger_path()
    if fresh:
        for extra in ("", "-wal", "-shm", "-journal"):
            try:
                path.with_name(path.name + extra).unlink(missing_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"cannot replace the demo's ledger {path}: {exc}") from None
    return f"sqlite:///{path}"


@dataclass
class DemoResult:
    """What the demo did, for the CLI to show."""

    ledger_url: str
    kling_url: str
    plan_total: Decimal
    """What the planned clips cost (in units), all of them."""
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
    except ImportError as exc:  # uvicorn and starlette are dependencies: a damaged environment
        name = (exc.name or "uvicorn").partition(".")[0]
        raise ConfigurationError(
            f"the demo needs {name}, a dependency of klingai-cost-controls missing from this "
            f"environment: pip install {name}"
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
    on_alert: Callable[[str], None] | None = None,
) -> DemoResult:
    """Set a small daily budget, run a batch of ``kling-v2-6`` 5 s clips against a simulated
    Kling until nothing more fits: the task of :data:`FAILING_PROMPT` fails (and is
    refunded, which lets one more clip in) and one prompt repeats (and is served from the
    cache). Alerts go to ``on_alert`` as they fire."""
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
    plan = plan_batch(
        [{"endpoint": r.endpoint, **r.body} for r in rows],
        ledger,
        ["project:demo"],
        labels=[f"line {r.line}" for r in rows],
    )
    if on_plan is not None:
        on_plan(plan)
    alerts: list[str] = []

    def alert(text: str) -> None:
        alerts.append(text)
        if on_alert is not None:
            on_alert(text)

    settings = {"task_seconds": task_seconds, "failure_rate": 0, "concurrency": 5, "seed": 7}
    sink = CallbackSink(alert, text=True, resolved=False, name="demo")
    with simulated_kling(**settings) as (url, sim, ak, sk), Deliverer(ledger, sink) as deliverer:

        def submitted(row: BatchRow, task: AnyTask) -> None:
            if row.prompt == FAILING_PROMPT:
                sim.state.fail_task(task.task_id, "the simulator failed this task on purpose")

        client = KlingClient(ak, sk, base_url=url, retry=RetryPolicy(base_delay=0.2))
        deliverer.start(interval=0.5)
        with CostAwareClient(
            client, ledger, scopes=["project:demo"], cache=CachePolicy(wait_poll=0.1)
        ) as guard:
            runner = BatchRunner(
                guard,
                rows,
                concurrency=3,
                poll=0.2,
                max_poll=0.25,
                on_result=on_result,
                on_submitted=submitted,
            )
            summary = runner.run()
        deliverer.stop()
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
