"""One error root: every error class lives in ``kling_cost.errors`` and is drawn in its tree, and
arguments the package refuses raise a ``KlingCostError`` subclass, never a bare ``ValueError``,
``TypeError`` or ``KeyError`` (the seed's ``BudgetGuard`` still raises a ``ValueError`` too)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import kling_cost
from kling_cost import errors
from kling_cost.errors import KlingCostError, PricingError, SinkError, ValidationError

ROOT = Path(kling_cost.__file__).resolve().parent


def _drawn_tree() -> dict[str, str]:
    """``name -> parent`` as drawn in ``errors.py``'s docstring (a child's branch sits right of its parent's)."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (column of the branch, name) from the root down
    for line in (errors.__doc__ or "").splitlines():
        branch = re.search(r"[├└]── (\w+)", line)
        if branch:
            column, name = branch.start(), branch[1]
        elif line.strip() == "KlingCostError":
            column, name = -1, "KlingCostError"
        else:
            continue
        while stack and stack[-1][0] >= column:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((column, name))
    return parents


def test_every_error_class_is_drawn_under_its_parent() -> None:
    drawn = _drawn_tree()
    classes = {
        name: obj
        for name in errors.__all__
        if inspect.isclass(obj := getattr(errors, name)) and issubclass(obj, KlingCostError)
    }
    assert set(drawn) == set(classes) - {"KlingCostError"}
    for name, cls in classes.items():
        if name != "KlingCostError":
            parent = next(base for base in cls.__mro__[1:] if base.__module__ == errors.__name__)
            assert drawn[name] == parent.__name__, name


def _all_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages([str(ROOT)], prefix="kling_cost.")
        if not info.name.endswith("__main__")
    ]


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_kling_cost_error_is_defined_in_errors_py() -> None:
    for name in _all_modules():
        importlib.import_module(name)
    outside = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in _subclasses(KlingCostError)
        if c.__module__ != errors.__name__
    )
    assert outside == []


def test_sink_error_is_one_class_wherever_it_is_imported_from() -> None:
    from kling_cost import alerts
    from kling_cost.alerts import base

    assert alerts.SinkError is base.SinkError is SinkError is kling_cost.SinkError
    assert kling_cost._SOURCE["SinkError"] == "errors"
    assert issubclass(SinkError, KlingCostError) and not issubclass(SinkError, ValueError)


SOURCE_RAISES = re.compile(r"^\s*raise (ValueError|TypeError|KeyError)\(", re.M)
PROTOCOL_RAISES = {
    # json.dumps(default=...) must raise TypeError for an object it cannot write; caught inside
    ("ledger/records.py", "TypeError"),
    ("cli/_common.py", "TypeError"),
    ("money.py", "TypeError"),
    # a Mapping's __getitem__/__delitem__ raise KeyError (the CLI's lazy command table)
    ("cli/_typer.py", "KeyError"),
    # caught at once and turned into the user's error (InvalidRequest, typer.BadParameter)
    ("kling/limits.py", "ValueError"),
    ("cli/_values.py", "ValueError"),
    # a pydantic validator raises ValueError; pydantic reports it as its ValidationError, which
    # the client and parse_callback turn into ServerError (a negative billing[] amount)
    ("kling/new_standard.py", "ValueError"),
}


def test_no_bare_builtin_error_is_raised_at_users() -> None:
    """The only ``raise ValueError/TypeError/KeyError`` left are protocol ones caught in place."""
    found = {
        (str(path.relative_to(ROOT)), kind)
        for path in ROOT.rglob("*.py")
        for kind in SOURCE_RAISES.findall(path.read_text(encoding="utf-8"))
    }
    assert found <= PROTOCOL_RAISES, found - PROTOCOL_RAISES


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, "eighty", "NaN", float("inf"), True, None])
def test_budget_guard_refuses_a_bad_alert_threshold_as_a_validation_error(
    threshold: Any, tmp_path: Path
) -> None:
    from kling_cost.compat import BudgetGuard

    url = f"sqlite:///{tmp_path / 'seed.db'}"
    with pytest.raises(ValidationError, match="alert_threshold must be a fraction in") as info:
        BudgetGuard(daily_limit=100, alert_threshold=threshold, ledger=url)
    assert isinstance(info.value, ValueError)  # what the seed's callers may catch
    assert not (tmp_path / "seed.db").exists()  # refused before the ledger is touched


@pytest.mark.parametrize("threshold", [0.8, "0.5", Decimal("1"), 1])
def test_budget_guard_takes_a_threshold_in_any_of_the_seeds_forms(threshold: Any, tmp_path: Path) -> None:
    from kling_cost.compat import BudgetGuard

    guard = BudgetGuard(daily_limit=100, alert_threshold=threshold, ledger=f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert guard.alert_threshold == Decimal(str(threshold))
    finally:
        guard.ledger.close()


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, "4", True])
def test_batch_runner_refuses_a_bad_concurrency_as_a_validation_error(concurrency: Any) -> None:
    from kling_cost.batch import BatchRunner

    with pytest.raises(ValidationError, match="concurrency must be a whole number of at least 1"):
        BatchRunner(None, [], concurrency=concurrency)  # type: ignore[arg-type]


def test_a_duration_price_without_a_duration_is_a_pricing_error() -> None:
    from kling_cost.pricing import Catalog, PriceEntry, estimate

    entry = PriceEntry(
        kind="image", basis="per_second", rate=Decimal(1), effective_from=date(2024, 1, 1), source="by hand"
    )
    with pytest.raises(PricingError, match="duration is required") as info:
        entry.quantity(duration=None, n=1)
    assert (info.value.field, info.value.value) == ("duration", None)
    catalog = Catalog(name="by-hand", unit="units", entries=(entry,), models={"image": ("kling-v1",)})
    with pytest.raises(PricingError, match="duration is required: image is priced 1 per second"):
        estimate(kind="image", model="kling-v1", catalog=catalog)


def test_the_simulator_refuses_bad_arguments_with_validation_errors() -> None:
    from kling_cost.simulator import ManualClock, create_app
    from tests.servers import AK, SK

    for settings in ({"video_units": "abc"}, {"failure_rate": 2}, {"task_seconds": -1}):
        with pytest.raises(ValidationError):
            create_app(AK, SK, **settings)
    clock = ManualClock(start=1_800_000_000)
    with pytest.raises(ValidationError, match="does not go back"):
        clock.advance(-1)
    assert clock.now() == 1_800_000_000
    state = create_app(AK, SK, clock=clock).state.simulator.state
    with pytest.raises(ValidationError, match="fault scope"):
        state.inject(1303, scope="everything")
    with pytest.raises(ValidationError, match="no running task nope"):
        state.fail_task("nope")
