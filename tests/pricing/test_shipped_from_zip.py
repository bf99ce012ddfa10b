"""Shipped catalogs are read beside the module, or through importlib.resources from a zipped
install (where no file path exists)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import kling_cost

PACKAGE = Path(kling_cost.__file__).resolve().parent


def test_shipped_catalogs_load_from_a_zipped_install(tmp_path: Path) -> None:
    archive = tmp_path / "kling_cost.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in PACKAGE.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, Path("kling_cost") / path.relative_to(PACKAGE))
    code = (
        "import kling_cost.pricing as p\n"
        "from kling_cost.money import format_amount\n"
        f"assert p.__file__.startswith({str(archive)!r}), p.__file__\n"
        "for name in ('kling-api', 'kling-app-credits'):\n"
        "    print(name, p.load_catalog(name).unit, format_amount(p.estimate(catalog=name).amount))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(archive)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["kling-api units 1", "kling-app-credits credits 10"]
