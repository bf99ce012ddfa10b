"""The README's Python examples run, and every CLI command has help text.

Blocks fenced as ``python`` run here; blocks fenced as ``py`` need real Kling credentials
and are only shown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from kling_cost.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_blocks_run(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_COST_LEDGER", f"sqlite:///{tmp_path / 'readme.db'}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {})


def test_readme_python_blocks_run_in_order_on_one_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user runs the examples one after the other on the default ledger: no example may
    leave budgets that make a later one fail (a budget of one unit refuses the other's)."""
    monkeypatch.setenv("KLING_COST_LEDGER", f"sqlite:///{tmp_path / 'default.db'}")
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(BLOCKS):
        try:
            exec(compile(code, f"{README}:block{i}", "exec"), {})
        except Exception as exc:  # pragma: no cover - the message says which block broke
            raise AssertionError(
                f"README python block {i} fails after the blocks before it: {exc!r}"
            ) from exc


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd, path))
    return out


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_command_has_help_and_is_documented(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    assert (cmd.help or "").strip(), f"kling-cost {' '.join(path)} has no help text"
    assert f"kling-cost {' '.join(path)}" in README.read_text(), f"README does not document {path}"
