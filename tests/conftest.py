from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kling_cost.cli._common import console, err_console
from tests.ledger.conftest import ledger_url  # noqa: F401 - the backend matrix, for every test
from tests.node.harness import kling_api_node  # noqa: F401 - the npm client kling-api, for every test
from tests.tls import tls_files  # noqa: F401 - a throwaway CA and loopback certificate, for every test

MAX_WORKERS = 4
"""``-n auto`` (pyproject's addopts) runs one worker per core, at most this many: the tests
start servers and processes of their own, and more workers only make them wait on each other."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def clean_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No test sees the developer's own settings; the default ledger lives in a temp dir."""
    for name in list(os.environ):
        if name.startswith(
            ("KLING_COST_", "KLING_ACCESS", "KLING_SECRET", "KLING_API", "KLING_BASE")
        ) and name not in (
            "KLING_COST_TEST_POSTGRES_URL",
            "KLING_COST_REQUIRE_SERVICES",
        ):
            monkeypatch.delenv(name, raising=False)
    data = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    # each in-process CLI run of this test sees its own COLUMNS, whatever ran before it
    console.forget()  # type: ignore[attr-defined]
    err_console.forget()  # type: ignore[attr-defined]
    yield
