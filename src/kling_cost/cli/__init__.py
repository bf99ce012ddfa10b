"""The ``kling-cost`` command line: a thin layer over the library.

The application (``app``, a Typer group) lives in :mod:`._app` and each command's module is
imported only when that command runs or its help is shown. Importing this package loads none of
it: :func:`main`, the script's entry point, answers ``kling-cost --help`` from the root help
rendered ahead of time (:mod:`._help`, kept identical to Typer's own output by a test), and
otherwise builds the application and runs it. ``from kling_cost.cli import app`` still works
(PEP 562), for tests and for embedding the CLI.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the ``kling-cost`` script."""
    from ._help import rendered_help, write_help

    text = rendered_help(sys.argv)
    if text is not None:
        write_help(text)
        return
    from ._app import app
    from ._common import run_main

    run_main(app)
