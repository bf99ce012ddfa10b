"""``kling-cost --help`` without importing Typer (most of the CLI's start-up time).

The root help is the same text every time on a terminal of 80 columns or more (Click wraps it
at ``min(columns, 80) - 2``), so it is rendered ahead of time into ``root_help.txt`` and printed
from there. Anything else, a narrower terminal included, goes through Typer as usual.
``tests/test_cli_help.py`` renders the help with Typer and fails, naming the command below,
when the stored text differs; refresh it with::

    python -m kling_cost.cli._help --write
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HELP_FILE", "live_help", "rendered_help", "terminal_columns", "write_help"]

HELP_FILE = Path(__file__).with_name("root_help.txt")
_FULL_WIDTH = 80  # Click's default max_width: from here on the help no longer changes


def terminal_columns() -> int:
    """The columns ``shutil.get_terminal_size()`` would report (what Click wraps to), without
    importing shutil: ``$COLUMNS`` when it is a positive number, else the terminal of stdout,
    else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    stream = sys.__stdout__
    if columns <= 0 and stream is not None:
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else _FULL_WIDTH


def rendered_help(argv: Sequence[str]) -> str | None:
    """The stored root help when ``argv`` (``sys.argv``) is the ``kling-cost`` script asked for
    exactly that and the terminal is wide enough for it to be the same text; ``None`` otherwise
    (``python -m kling_cost`` names itself differently in the usage line)."""
    if len(argv) != 2 or argv[1] != "--help" or os.path.basename(argv[0]) != "kling-cost":
        return None
    if terminal_columns() < _FULL_WIDTH:
        return None
    try:
        return HELP_FILE.read_text(encoding="utf-8")
    except OSError:
        return None


def write_help(text: str) -> None:
    """Print ``text`` on stdout and end as the Typer path does when stdout cannot take it: no
    stdout (``kling-cost --help >&-``), nothing is printed (exit 0, as ``click.echo``); the
    reader has gone (a closed pipe), exit 1 without a traceback (as Click's ``main``); any
    other failure (a full disk), the CLI's one line ``internal error: ...`` and exit 1."""
    out = sys.stdout
    if out is None:
        return
    try:
        out.write(text)
        out.flush()
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            # what is still buffered would fail again at exit: let it go to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            sys.exit(1)
        from ._common import internal_error

        internal_error(exc)


def live_help() -> str:
    """The root help as Typer renders it at full width (what ``root_help.txt`` must hold)."""
    import io
    from contextlib import redirect_stdout

    from ._app import app

    out = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(_FULL_WIDTH)
    try:
        with redirect_stdout(out):
            try:
                app(["--help"], prog_name="kling-cost", standalone_mode=True)
            except SystemExit as done:
                if done.code not in (0, None):
                    raise
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return out.getvalue()


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m kling_cost.cli._help --write")
    HELP_FILE.write_text(live_help(), encoding="utf-8")
    print(f"wrote {HELP_FILE}")
