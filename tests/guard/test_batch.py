from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost import ConfigurationError, PricingError
from kling_cost.batch import BatchRunner, plan_batch, read_batch
from kling_cost.cache import CachePolicy
from kling_cost.guard import CostAwareClient
from kling_cost.ledger import open_ledger
from kling_cost.simulator import create_app
from tests.guard.conftest import World
from tests.servers import AK, SK, serve


@pytest.fixture
def twin() -> str:
    """Batches run on the sync guard: one run per test."""
    return "sync"


def test_plan_total_fit_and_seed_message(tmp_path: Path) -> None:
    with open_ledger(f"sqlite:///{tmp_path / 'p.db'}") as ledger:
        ledger.set_budget("project:film", 100, unit="credits")
        ledger.commit(ledger.reserve(40, ["project:film"], unit="credits"), 40)
        plan = plan_batch(
            [{"kind": "text2video", "mode": "professional", "duration": 10}] * 10,
            ledger,
            ["project:film"],
            catalog="kling-app-credits",
        )
    assert (plan.total, plan.remaining, plan.fits, plan.fit_count) == (700, 60, False, 0)
    assert plan.message == "Batch needs 700 credits but only 60 remaining. Reduce to 0 videos or lower mode."
    alts = {a.name: a for a in plan.alternatives}
    assert alts["standard"].total == 200 and alts["standard"].saving == 500
    assert alts["standard"].saving_percent == Decimal("71.4")
    assert alts["5s"].total == 350
    assert alts["cheapest"].total == 100  # std + 5 s: 10 x 10 credits


def test_plan_api_units_usd_and_turbo() -> None:
    plan = plan_batch(
        [{"kind": "text2video", "model": "kling-v2-6", "mode": "pro", "duration": 10, "audio": True}] * 4
    )
    assert (plan.total, plan.usd, plan.fits) == (40, Decimal("5.6"), True)
    alts = {a.name: a for a in plan.alternatives}
    assert alts["no-audio"].total == 20 and alts["no-audio"].saving_usd == Decimal("2.8")
    assert alts["turbo"].total == 20  # kling-v2-5-turbo pro 0.5 u/s x 10 s, without audio
    assert alts["cheapest"].total == 6  # std 0.3 u/s x 5 s, no audio


def test_plan_names_the_bad_item() -> None:
    with pytest.raises(PricingError, match="item 2: duration 7"):
        plan_batch([{"model": "kling-v2-6"}, {"model": "kling-v2-6", "duration": 7}])


def test_read_batch_formats_and_stable_keys(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("# shots\na fox\n\na fox\na bird\n")
    rows = read_batch(txt, {"model_name": "kling-v2-6", "mode": "professional", "duration": 5})
    assert [r.line for r in rows] == [2, 4, 5]
    assert rows[0].body["mode"] == "pro" and rows[0].body["duration"] == "5"
    assert rows[0].key != rows[1].key and rows[0].key.rsplit("-", 1)[0] == rows[1].key.rsplit("-", 1)[0]
    assert [r.key for r in read_batch(txt, {"model_name": "kling-v2-6", "mode": "pro", "duration": 5})] == [
        r.key for r in rows
    ]
    jl = tmp_path / "p.jsonl"
    jl.write_text(
        json.dumps({"prompt": "x", "model": "kling-v1", "audio": False})
        + "\n"
        + json.dumps({"prompt": "y", "kind": "image", "n": "2", "external_task_id": "mine"})
        + "\n"
    )
    a, b = read_batch(jl)
    assert (a.endpoint, a.body["model_name"], a.body["sound"]) == ("text2video", "kling-v1", "off")
    assert (b.endpoint, b.body["n"], b.key) == ("image", 2, "mine")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("prompt,mode,duration\nfirst,pro,10\nsecond,,\n")
    c1, c2 = read_batch(csv_file, {"mode": "std"})
    assert (c1.body["mode"], c1.body["duration"], c2.body["mode"]) == ("pro", "10", "std")


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{not json\n', "bad.jsonl:2: not valid JSON"),
        ("bad.csv", "text\nhello\n", "needs a header row with a 'prompt' column"),
        ("empty.txt", "# nothing\n\n", "has no rows"),
        ("bad2.jsonl", '{"prompt": "x", "mode": "ultra"}\n', "bad2.jsonl:1: mode 'ultra'"),
    ],
)
def test_read_batch_errors(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(").replace("'", "'")):
        read_batch(path)


def _run(world: World, rows: list, **kwargs: object) -> tuple[object, BatchRunner]:
    with world.guard() as guard:
        runner = BatchRunner(guard, rows, concurrency=3, poll=0.01, backoff=0.01, **kwargs)  # type: ignore[arg-type]
        with ticking(world):
            summary = runner.run()
    return summary, runner


@contextmanager
def ticking(world: World) -> Iterator[None]:
    """Move the simulator's manual clock in the background so submitted tasks end."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.02):
            world.finish(11)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def test_batch_stops_at_the_ceiling_and_adds_up(world: World, tmp_path: Path) -> None:
    world.ledger.set_budget("project:film", Decimal("7.5"))  # five 1.5-unit clips
    prompts = tmp_path / "shots.txt"
    prompts.write_text("\n".join(f"shot {i}" for i in range(10)) + "\nshot 3\n")
    rows = read_batch(prompts, {"model_name": "kling-v2-6", "mode": "std", "duration": 5})
    world.sim.state.fail_next(1)
    results = tmp_path / "results.jsonl"
    summary, runner = _run(world, rows, results_path=results)
    data = summary.to_dict()  # type: ignore[attr-defined]
    u = world.ledger.usage("project:film")
    assert u.used <= u.limit and u.reserved == 0
    assert runner.stop_reason and "budget exceeded" in runner.stop_reason.lower()
    charges = world.ledger.charges()
    succeeded = [c for c in charges if c.status == "succeeded"]
    assert Decimal(data["spent"]) == sum(c.actual for c in succeeded) == u.used
    assert data["done"] == len(succeeded) and data["failed"] == sum(c.status == "failed" for c in charges)
    assert (
        data["done"] + data["failed"] + data["cached"] + data["refused"] + data["skipped"] + data["errors"]
        == 11
    )
    assert world.ledger.reservations(status="reserved") == []
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(lines) == 11 and {x["status"] for x in lines} <= {
        "done",
        "failed",
        "cached",
        "refused",
        "skipped",
    }
    assert all(t.status in ("succeed", "failed") for t in world.tasks)


def test_rerun_skips_what_is_done(world: World, tmp_path: Path) -> None:
    world.ledger.set_budget("project:film", 100)
    prompts = tmp_path / "shots.txt"
    prompts.write_text("one\ntwo\nthree\n")
    rows = read_batch(prompts, {"model_name": "kling-v1"})
    first, _ = _run(world, rows)
    again, _ = _run(world, rows)
    assert first.to_dict()["done"] == 3  # type: ignore[attr-defined]
    assert again.to_dict()["earlier"] == 3 and again.to_dict()["spent"] == "0"  # type: ignore[attr-defined]
    assert len(world.tasks) == 3 and world.ledger.usage("project:film").used == 3


def test_concurrency_limit_backs_off_instead_of_failing(tmp_path: Path) -> None:
    from kling_cost.kling import KlingClient, RetryPolicy
    from kling_cost.simulator import ManualClock

    clock = ManualClock()
    app = create_app(AK, SK, clock=clock, task_seconds=10, failure_rate=0, concurrency=1)
    with serve(app) as url, open_ledger(f"sqlite:///{tmp_path / 'c.db'}") as ledger:
        sim = app.state.simulator
        world = World(url, sim, clock, ledger, "")
        client = KlingClient(AK, SK, base_url=url, retry=RetryPolicy(attempts=1, base_delay=0))
        with CostAwareClient(client, ledger, cache=CachePolicy(enabled=False)) as guard:
            rows = read_batch(_file(tmp_path, ["a", "b", "c", "d"]), {"model_name": "kling-v1"})
            runner = BatchRunner(guard, rows, concurrency=4, poll=0.01, backoff=0.01, max_backoff=0.05)
            with ticking(world):
                summary = runner.run()
    assert summary.to_dict()["done"] == 4
    assert len(sim.state.tasks) == 4


def _file(tmp_path: Path, prompts: list[str]) -> Path:
    path = tmp_path / "rows.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


def test_plan_prices_try_on_effects_and_lip_sync_rows() -> None:
    plan = plan_batch(
        [
            {"kind": "tryon", "human_image": "h.png", "cloth_image": "c.png"},
            {"kind": "effects", "effect_scene": "hug", "input": {"mode": "pro", "image": "x.png"}},
            {"kind": "text2video", "prompt": "fox", "model_name": "kling-v2-6"},
        ]
    )
    assert [e.amount for e in plan.items] == [1, Decimal("3.5"), Decimal("1.5")]
    with pytest.raises(PricingError, match="must be a mapping"):
        plan_batch(["just a prompt"])  # type: ignore[list-item]


def test_read_batch_refuses_a_repeated_external_task_id(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"prompt": "a", "external_task_id": "k"}\n{"prompt": "b", "external_task_id": "k"}\n')
    with pytest.raises(ConfigurationError, match=r"dup\.jsonl:2: external_task_id .k. is also on line 1"):
        read_batch(path)


def test_refunds_free_room_that_waiting_rows_use(any_world: World, tmp_path: Path) -> None:
    """Five rows fill the budget (7.5 units) while their tasks run; two of them fail. The
    sixth row is refused then, and waits: the two refunds let two more rows in, so the budget
    is filled in one run; only then are rows refused for good and the rest not sent."""
    world = any_world
    world.ledger.set_budget("project:film", Decimal("7.5"))  # five 1.5-unit clips
    rows = read_batch(_file(tmp_path, [f"shot {i}" for i in range(10)]), {"model_name": "kling-v2-6"})
    world.sim.state.fail_next(2)
    with world.guard() as guard:
        runner = BatchRunner(guard, rows, concurrency=6, poll=0.01, backoff=0.01)
        worker = threading.Thread(target=lambda: setattr(runner, "summary", runner.run()))
        worker.start()
        deadline = time.monotonic() + 10  # Kling's clock stands still until a row is refused
        while not any(a.kind == "refused" for a in world.ledger.alerts()):
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.01)
        assert world.ledger.usage("project:film").reserved == Decimal("7.5")
        with ticking(world):
            worker.join(20)
    summary = runner.summary  # type: ignore[attr-defined]
    counts = summary.to_dict()
    usage = world.ledger.usage("project:film")
    assert (usage.used, usage.reserved) == (Decimal("7.5"), 0)
    assert (counts["done"], counts["failed"], counts["spent"]) == (5, 2, "7.5")
    assert counts["refused"] >= 1 and counts["refused"] + counts["skipped"] == 3
    assert runner.stop_reason and "budget exceeded" in runner.stop_reason.lower()
    assert len(world.tasks) == 7 and world.ledger.reservations(status="reserved") == []


def test_a_row_above_the_whole_limit_is_refused_without_waiting(world: World, tmp_path: Path) -> None:
    """No settlement can make room for a row costing more than the whole limit: it is refused
    at once, while the row before it still runs (Kling's clock does not move until then)."""
    world.ledger.set_budget("project:film", 2)
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b", "duration": 10}\n')  # 1.5, then 3 units
    rows = read_batch(path, {"model_name": "kling-v2-6"})
    refused = threading.Event()
    with world.guard() as guard:
        runner = BatchRunner(
            guard,
            rows,
            concurrency=2,
            poll=0.01,
            on_result=lambda r: refused.set() if r.status == "refused" else None,
        )
        worker = threading.Thread(target=lambda: setattr(runner, "summary", runner.run()))
        worker.start()
        assert refused.wait(10), "the row waited for a settlement that cannot help"
        with ticking(world):
            worker.join(10)
    assert [r.status for r in runner.summary.results] == ["done", "refused"]  # type: ignore[attr-defined]
    assert world.ledger.usage("project:film").used == Decimal("1.5")


def test_interrupt_stops_sending_and_settles_then_abandons(world: World, tmp_path: Path) -> None:
    """interrupt() once: rows not sent are skipped, running ones settle; twice: the runner
    returns at once, rows still running are ``running`` and keep their holds."""
    world.ledger.set_budget("project:film", 100)
    rows = read_batch(_file(tmp_path, [f"shot {i}" for i in range(8)]), {"model_name": "kling-v2-6"})
    levels: list[tuple[int, int]] = []
    with world.guard() as guard:
        runner = BatchRunner(
            guard, rows, concurrency=3, poll=0.01, on_stopping=lambda lvl, n: levels.append((lvl, n))
        )
        seen = threading.Event()
        runner.on_submitted = lambda row, task: seen.set()
        worker = threading.Thread(target=lambda: setattr(runner, "summary", runner.run()))
        worker.start()
        assert seen.wait(10)
        while runner.in_flight < 3:
            time.sleep(0.01)
        runner.interrupt()
        runner.interrupt()
        worker.join(10)
        assert not worker.is_alive()
    summary = runner.summary  # type: ignore[attr-defined]
    assert levels == [(1, 3), (2, 3)]
    statuses = [r.status for r in summary.results]
    assert statuses.count("running") == 3 and statuses.count("skipped") == 5
    held = world.ledger.reservations(status="reserved")
    assert len(held) == 3 and all(r.task_id for r in held)
    world.finish()
    with world.guard() as guard, ticking(world):
        again = BatchRunner(guard, rows, concurrency=3, poll=0.01).run()  # resumes, sends the rest
    assert again.count("done") == 8 and len(world.tasks) == 8
    assert world.ledger.usage("project:film").used == Decimal("12")


def test_plan_question_says_what_fits_with_the_unit_and_plurals(tmp_path: Path) -> None:
    ten_s_pro = {"kind": "text2video", "mode": "pro", "duration": 10}  # 70 credits
    with open_ledger(f"sqlite:///{tmp_path / 'q.db'}") as ledger:
        ledger.set_budget("account", 500, unit="credits")
        plan = plan_batch([ten_s_pro] * 40, ledger, [], catalog="kling-app-credits")
        assert plan.question == (
            "40 requests, 2800 credits; 7 fit in today's budget of 500 credits (account): run them?"
        )
        ledger.set_budget("project:film", 100, "week", unit="credits")
        ledger.commit(ledger.reserve(20, ["project:film"], unit="credits"), 20)
        plan = plan_batch([ten_s_pro] * 3, ledger, ["project:film"], catalog="kling-app-credits")
        assert plan.question == (
            "3 requests, 210 credits; 1 fits in the 80 credits left of this week's budget of "
            "100 credits (project:film): run them?"
        )
        assert plan.message.endswith("Reduce to 1 video or lower mode.")
        one = plan_batch([ten_s_pro], ledger, ["project:film"], catalog="kling-app-credits")
        assert one.question.startswith("1 request, 70 credits; it fits in the 80 credits left")
        assert one.question.endswith(": run it?")
    free = plan_batch([{"kind": "text2video", "model": "kling-v2-6"}] * 2)
    assert free.question == "2 requests, 3 units: run them?"


def test_a_long_batch_keeps_one_ledger_connection_per_worker(world: World, tmp_path: Path) -> None:
    """Rows are run by ``concurrency`` long-lived workers, not a thread (and a SQLite
    connection, kept until the ledger closes) per row."""
    world.ledger.set_budget("project:film", 100)
    rows = read_batch(_file(tmp_path, [f"shot {i}" for i in range(24)]), {"model_name": "kling-v1"})
    before = world.ledger.backend.connection_count  # type: ignore[attr-defined]
    summary, _ = _run(world, rows)  # concurrency 3
    assert summary.count("done") == 24  # type: ignore[attr-defined]
    assert world.ledger.backend.connection_count - before <= 3  # type: ignore[attr-defined]
