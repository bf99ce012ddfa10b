"""Kling's figures finer than the ledger's 0.001 (``8.0004``) are committed rounded up, never
refused (which would leave the hold until its lease and the charge uncounted), on both
backends and both standards."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kling_cost.guard.actuals import actual
from kling_cost.kling import KlingTask
from kling_cost.kling.new_standard import NewStandardTask
from kling_cost.ledger import Ledger
from kling_cost.pricing import load_catalog


@pytest.mark.parametrize(
    ("task", "committed"),
    [
        (
            KlingTask.model_validate(
                {"task_id": "t1", "task_status": "succeed", "final_unit_deduction": "8.0004"}
            ),
            Decimal("8.001"),
        ),
        (
            NewStandardTask.model_validate(
                {
                    "id": "t2",
                    "status": "succeeded",
                    "billing": [
                        {"charge_type": "unit", "amount": "3.0001", "package_type": "video"},
                        {"charge_type": "unit", "amount": "5", "package_type": "video"},
                    ],
                }
            ),
            Decimal("8.001"),
        ),
        (
            KlingTask.model_validate(
                {"task_id": "t3", "task_status": "succeed", "final_unit_deduction": "8"}
            ),
            Decimal("8"),
        ),
    ],
)
def test_a_finer_billed_amount_is_committed_rounded_up(
    ledger: Ledger, task: object, committed: Decimal
) -> None:
    ledger.set_budget("account", 100)
    res = ledger.reserve(Decimal(10), ["account"], metadata={"kind": "text2video"})
    amount, source = actual(task, res, load_catalog())  # type: ignore[arg-type]
    assert amount == committed
    assert ("rounded up to 0.001" in source) == (committed != Decimal(8))
    ledger.commit(res, amount)
    assert ledger.usage("account").used == committed
