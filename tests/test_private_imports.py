"""No module imports another package's private module (issue 13, item 4): what packages
share is public where it belongs (``kling.tasks``, ``kling.endpoints``, ``timestamps`` ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import kling_cost

SRC = Path(kling_cost.__file__).resolve().parent


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name ``node`` imports from, as seen from ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join([*base, *([node.module] if node.module else [])])


def private_reaches(src: Path) -> list[str]:
    found = []
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = _absolute(module if parts[-1] != "__init__" else module + ".__init__", node)
            if not target.startswith(f"{src.name}."):  # ours only (third-party privates: not here)
                continue
            names = target.split(".")
            for i, name in enumerate(names):
                if name.startswith("_") and not name.startswith("__"):
                    owner = ".".join(names[:i])  # the package the private module belongs to
                    if package != owner and not package.startswith(owner + "."):
                        found.append(f"{module} imports {target}")
                    break
    return found


def test_no_module_imports_another_packages_private_module() -> None:
    assert private_reaches(SRC) == []


def test_the_check_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "kling_cost"
    (pkg / "kling").mkdir(parents=True)
    (pkg / "guard").mkdir()
    for name in ("__init__.py", "kling/__init__.py", "kling/_core.py", "guard/__init__.py"):
        (pkg / name).write_text("")
    (pkg / "kling" / "client.py").write_text("from ._core import x\n")  # inside: fine
    (pkg / "guard" / "client.py").write_text("from ..kling._core import x\n")
    assert private_reaches(pkg) == ["kling_cost.guard.client imports kling_cost.kling._core"]
