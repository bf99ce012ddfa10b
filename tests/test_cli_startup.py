"""What starting the package and the CLI loads: structure, not timing (benchmarks/cli_startup.py
times it). `import kling_cost` loads none of its submodules; `kling-cost --help` and
`kling-cost estimate` load neither pydantic, httpx, rich nor the ledger, and `estimate` imports
no other command's module."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kling_cost
from kling_cost.cli import app
from kling_cost.cli._app import _Commands

SRC = Path(kling_cost.__file__).resolve().parent
HEAVY = ("pydantic", "httpx", "starlette", "uvicorn", "jinja2", "plotly", "jwt", "psycopg", "anyio")
LIBRARY = tuple(
    f"kling_cost.{name}"
    for name in ("ledger", "batch", "advisor", "alerts", "kling", "guard", "reports", "web", "simulator")
)


def loaded_modules(tmp_path: Path, code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter has loaded when ``code`` ends (also by SystemExit)."""
    out = tmp_path / "modules.json"
    prologue = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prologue + code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
    assert out.exists(), proc.stderr
    return set(json.loads(out.read_text()))


def cli_modules(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> set[str]:
    code = f"sys.argv = ['kling-cost', *{list(argv)!r}]\nfrom kling_cost.cli import main\nmain()\n"
    return loaded_modules(tmp_path, code, env)


def present(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in names or m.startswith(tuple(f"{n}." for n in names)))


def test_import_kling_cost_loads_no_submodule(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, "import kling_cost\n")
    assert "kling_cost" in modules
    assert sorted(m for m in modules if m.startswith("kling_cost.")) == []
    assert present(modules, (*HEAVY, "rich", "typer", "click", "sqlite3", "typing")) == []


def test_from_kling_cost_import_loads_only_what_it_names(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, "from kling_cost import estimate, format_amount\nestimate()\n")
    assert {"kling_cost.pricing", "kling_cost.money"} <= modules
    assert present(modules, (*HEAVY, *LIBRARY, "rich", "typer")) == []


def test_help_loads_no_heavy_library(tmp_path: Path) -> None:
    modules = cli_modules(tmp_path, "--help")
    assert present(modules, (*HEAVY, *LIBRARY, "rich", "sqlite3", "kling_cost.pricing")) == []


def test_root_help_is_answered_without_typer(tmp_path: Path) -> None:
    modules = cli_modules(tmp_path, "--help")
    assert "kling_cost.cli._help" in modules
    assert present(modules, ("typer", "click", "kling_cost.cli._app", "kling_cost.cli._common")) == []
    # anything else builds the Typer application
    modules = cli_modules(tmp_path, "estimate", "--help")
    assert {"typer", "kling_cost.cli._app"} <= modules


def test_importing_the_cli_package_builds_nothing(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, "import kling_cost.cli\n")
    assert present(modules, ("typer", "click", "kling_cost.cli._app")) == []


def test_estimate_loads_only_its_own_command(tmp_path: Path) -> None:
    modules = cli_modules(tmp_path, "estimate", "--model", "kling-v2-6", "--mode", "std", "--duration", "5")
    assert "kling_cost.pricing" in modules and "kling_cost.cli.pricing" in modules
    assert present(modules, (*HEAVY, *LIBRARY, "rich", "sqlite3")) == []
    others = {
        f"kling_cost.cli.{m}" for m in ("alerts", "budget", "demo", "generate", "keys", "report", "simulate")
    }
    assert sorted(modules & others) == []


def test_usage_loads_the_ledger_but_no_http_or_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    kling_cost.open_ledger(url).close()
    modules = cli_modules(tmp_path, "usage", env={"KLING_COST_LEDGER": url})
    assert "kling_cost.ledger" in modules
    assert present(modules, (*HEAVY, "kling_cost.batch", "kling_cost.kling", "kling_cost.web")) == []


def _type_checking_imports() -> dict[str, str]:
    """``name -> submodule`` of the ``if TYPE_CHECKING:`` block of ``kling_cost/__init__.py``."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    return {
        alias.name: str(node.module)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_lazy_names_match_what_type_checkers_see() -> None:
    """The names type checkers import (TYPE_CHECKING) are the ones __getattr__ serves, from the
    same submodules, and they are exactly __all__."""
    seen = _type_checking_imports()
    served = {name: module for module, names in kling_cost._SUBMODULES.items() for name in names}
    assert seen == served
    assert set(served) == set(kling_cost.__all__) - {"__version__"}


@pytest.mark.parametrize("name", sorted(set(kling_cost.__all__) - {"__version__"}))
def test_every_public_name_is_its_submodules_object(name: str) -> None:
    import importlib

    module = importlib.import_module(f"kling_cost.{kling_cost._SOURCE[name]}")
    namespace: dict[str, object] = {}
    exec(f"from kling_cost import {name}", namespace)
    assert namespace[name] is getattr(module, name) is getattr(kling_cost, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'estimat'"):
        kling_cost.estimat  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        exec("from kling_cost import NoSuchThing", {})


def test_every_lazy_command_resolves_and_is_listed() -> None:
    from typer.main import get_command

    group = get_command(app)
    names = group.list_commands(None)  # type: ignore[attr-defined]
    assert names[: len(_Commands.lazy_commands)] == list(_Commands.lazy_commands)
    for name in names:
        command = group.get_command(None, name)  # type: ignore[attr-defined]
        assert command is not None and command.name == name and (command.help or "").strip()


def test_alerts_config_variable_is_spelt_alike() -> None:
    from kling_cost.alerts.config import ENV_CONFIG
    from kling_cost.cli.alerts import ENV_CONFIG as CLI_ENV_CONFIG

    assert CLI_ENV_CONFIG == ENV_CONFIG


def test_a_lazy_group_also_runs_commands_added_the_usual_way() -> None:
    """Commands registered with app.command() (built at once) sit beside the lazy ones."""
    from typing import ClassVar

    from typer.testing import CliRunner

    from kling_cost.cli._typer import App, LazyGroup

    class Group(LazyGroup):
        lazy_package: ClassVar[str] = "kling_cost.cli"
        lazy_commands: ClassVar[dict[str, str]] = {"estimate": "pricing:estimate_command"}

    tool = App(cls=Group, name="tool", no_args_is_help=True)
    tool.callback()(lambda: None)  # a group, not a single command (as kling_cost.cli's _root)

    @tool.command("hello")
    def hello(name: str = "you") -> None:
        """Say hello."""
        print(f"hello {name}")

    runner = CliRunner()
    result = runner.invoke(tool, ["--help"])
    assert result.exit_code == 0
    assert re.search(r"^  estimate\s+Estimate what", result.stdout, re.M)
    assert re.search(r"^  hello\s+Say hello\.$", result.stdout, re.M)
    assert runner.invoke(tool, ["hello", "--name", "Ada"]).stdout == "hello Ada\n"
    result = runner.invoke(tool, ["estimate", "--model", "kling-v2-6", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["amount"] == "1.5"
