"""The seed document's API, used exactly as the seed writes it, on the durable ledger."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost import (
    BudgetExceeded,
    BudgetGuard,
    CostAwareKlingClient,
    KlingClient,
    PricingError,
    RetryPolicy,
    UsageTracker,
    pre_batch_check,
)
from kling_cost.ledger import open_ledger
from kling_cost.simulator import create_app
from tests.servers import AK, SK, serve


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    monkeypatch.setenv("KLING_COST_LEDGER", url)
    return url


@pytest.fixture
def base_client() -> Iterator[KlingClient]:
    app = create_app(AK, SK, task_seconds=0.2, failure_rate=0)
    with serve(app) as url, KlingClient(AK, SK, base_url=url, retry=RetryPolicy(base_delay=0)) as client:
        yield client


def test_budget_guard_as_in_the_seed(ledger_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    budget = BudgetGuard(daily_limit=100, alert_threshold=0.8)
    assert budget.estimate_credits(5, "standard") == 10
    assert budget.estimate_credits(10, "professional") == 70
    assert budget.estimate_credits(duration=5, mode="standard", audio=True) == 50
    budget.check(70)
    budget.record(70)
    assert budget.remaining == 30
    assert budget.usage_report == {"used": 70, "limit": 100, "remaining": 30, "usage_pct": "70.0%"}
    budget.check(10)  # 80 %: the seed's alert, once
    budget.record(10)
    budget.check(10)
    budget.record(10)
    assert capsys.readouterr().out.count("ALERT: Budget at 80% (80/100)") == 1
    with pytest.raises(RuntimeError, match=r"Daily budget exceeded: 90 \+ 20 > 100 credits"):
        budget.check(20)


def test_budget_is_durable_and_shared(ledger_env: str) -> None:
    first = BudgetGuard(daily_limit=100)
    first.check(35)
    first.record(35)
    restarted = BudgetGuard(daily_limit=100)  # a new process: nothing forgotten
    assert restarted.remaining == 65
    passed: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        guard = BudgetGuard(daily_limit=100)
        barrier.wait()
        try:
            passed.append(guard.check(20))
        except BudgetExceeded:
            passed.append(False)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert passed.count(True) == 3  # 65 left: three 20-credit checks fit, never four


def test_unlisted_combination_is_an_error_not_a_guess(ledger_env: str) -> None:
    with pytest.raises(PricingError):
        BudgetGuard().estimate_credits(duration=10, mode="standard", audio=True)


def test_pre_batch_check_as_in_the_seed(ledger_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    budget = BudgetGuard(daily_limit=100)
    prompts = ["a", "b", "c"]
    assert pre_batch_check(prompts, budget, duration=5, mode="standard") == 30
    out = capsys.readouterr().out
    assert "Batch estimate: 3 videos x 10 credits = 30 credits" in out and "Budget remaining: 100" in out
    with pytest.raises(
        RuntimeError,
        match=r"Batch needs 210 credits but only 100 remaining\. "
        r"Reduce to 1 videos or lower mode\.",
    ):
        pre_batch_check(prompts, budget, duration=10, mode="professional")


class SlackGuard(BudgetGuard):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.sent: list[str] = []

    def _on_alert(self, message: str) -> None:
        self.sent.append(message)


def test_cost_aware_kling_client_with_a_base_client(
    ledger_env: str, base_client: KlingClient, tmp_path: Path
) -> None:
    budget = SlackGuard(daily_limit=40, alert_threshold=0.5)
    client = CostAwareKlingClient(base_client, budget)
    result = client.text_to_video("a red fox in snow", duration=5, mode="standard")
    assert result.task_status in ("submitted", "processing")
    assert budget.usage_report["used"] == 10
    client.text_to_video("a second fox", duration=10, mode="standard")
    assert budget.sent == ["Budget at 75% (30/40)"]
    with pytest.raises(RuntimeError):
        client.text_to_video("too much", duration=5, mode="professional")
    with open_ledger(ledger_env) as ledger:
        assert ledger.usage("account", "day").used == 30 and ledger.usage("account", "day").reserved == 0

    tracker = UsageTracker(log_file=str(tmp_path / "kling_usage.jsonl"))
    tracker.log(result.task_id, 10, "kling-v1", 5, "standard", "a red fox in snow " * 10)
    [line] = (tmp_path / "kling_usage.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert list(entry) == ["timestamp", "task_id", "credits", "model", "duration", "mode", "prompt_preview"]
    assert entry["credits"] == 10 and len(entry["prompt_preview"]) == 100


def test_a_failed_call_frees_the_credits(ledger_env: str) -> None:
    class Broken:
        def text_to_video(self, prompt: str, **kwargs: object) -> None:
            raise ConnectionError("network down")

    budget = BudgetGuard(daily_limit=50)
    with pytest.raises(ConnectionError):
        CostAwareKlingClient(Broken(), budget).text_to_video("x")
    assert budget.remaining == 50 and budget.usage_report["used"] == 0
    assert Decimal(budget.remaining) == 50


def test_record_never_takes_another_threads_reservation(ledger_env: str) -> None:
    budget = BudgetGuard(daily_limit=1000)
    budget.check(10)  # this thread's reservation
    worker = threading.Thread(target=lambda: budget.record(20))  # checked nothing: a direct charge
    worker.start()
    worker.join()
    budget.record(10)
    assert budget.usage_report["used"] == 30
