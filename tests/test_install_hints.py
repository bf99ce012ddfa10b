"""What the package tells users to install is true: every ``pip install '...[extra]'`` hint names
an extra that exists and installs something, and a missing dependency is one line naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kling_cost.ledger import open_ledger

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
HINT = re.compile(r"(?:klingai-cost-controls|(?<=['\"\s])\.)\[([^\]]*)\]")


def _hint_files() -> list[Path]:
    return [
        REPO / "README.md",
        REPO / ".ci" / "run",
        *sorted((REPO / "src").rglob("*.py")),
        *sorted((REPO / "src").rglob("*.toml")),
    ]


def _hints() -> list[tuple[str, str]]:
    """``(where, extra)`` for every extra named on a line that says ``pip install``."""
    found = []
    for path in _hint_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "pip install" in line:
                for names in HINT.findall(line):
                    found += [(f"{path.relative_to(REPO)}:{number}", n.strip()) for n in names.split(",")]
    return found


def test_every_extra_installs_something() -> None:
    assert {name for name, requirements in EXTRAS.items() if not requirements} == set()


def test_every_install_hint_names_an_extra_that_exists() -> None:
    hints = _hints()
    assert {extra for _, extra in hints} >= {"postgres", "notify", "test"}  # the hints are found at all
    wrong = [(where, extra) for where, extra in hints if extra not in EXTRAS]
    assert wrong == []


def test_the_extras_the_test_extra_pulls_in_exist() -> None:
    own = [r for r in EXTRAS["test"] if r.startswith("klingai-cost-controls[")]
    for requirement in own:
        for extra in re.findall(r"\[([^\]]*)\]", requirement)[0].split(","):
            assert EXTRAS.get(extra.strip()), requirement


def _run_without(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``kling-cost ARGS`` in a Python where ``import MODULE`` fails, as in an environment without it."""
    code = f"import sys; sys.modules[{module!r}] = None; from kling_cost.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("uvicorn", "simulate"),
        ("starlette", "simulate"),
        ("uvicorn", "serve"),
        ("jinja2", "serve"),
        ("plotly", "serve"),
        ("uvicorn", "demo"),
    ],
)
def test_a_missing_dependency_is_one_line_naming_it(module: str, command: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).close()
    args = {
        "simulate": ["simulate", "--port", "0"],
        "serve": ["serve", "--port", "0", "--ledger", url],
        "demo": ["demo", "--ledger", url, "--json"],
    }[command]
    done = _run_without(module, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert f"needs {module}, a dependency of klingai-cost-controls" in line
    assert line.endswith(f"pip install {module}") and "[" not in line
