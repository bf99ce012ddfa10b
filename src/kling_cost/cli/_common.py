"""What every command shares: consoles, option types, JSON output, the error boundary."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import typer

from ..errors import (
    BudgetExceeded,
    ConfigurationError,
    KlingAPIError,
    KlingCostError,
    MissingCredentials,
    PricingError,
    ReservationError,
    StorageError,
    ValidationError,
)

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich ``Console`` made on first use: `kling-cost --help` and a usage error print
    without importing rich. Everything (``print``, ``file``, ``capture()``, ``with``, and
    ``Progress(console=...)``) reaches the real console."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def forget(self) -> None:
        """Make a new console on next use. Rich reads ``COLUMNS`` (and the terminal) when a
        console is made, so a process that runs the CLI several times in-process (tests with
        ``CliRunner``) calls this between runs for each run to see its own environment."""
        self._console = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._real().__exit__(*exc)


console = cast("Console", _LazyConsole(highlight=False))
err_console = cast("Console", _LazyConsole(stderr=True, highlight=False))

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_BUDGET = 3
EXIT_STORAGE = 4
EXIT_KLING = 5

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LedgerOption = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        envvar="KLING_COST_LEDGER",
        metavar="URL",
        help="Ledger URL (sqlite:///path.db or postgresql://...). Default: $KLING_COST_LEDGER, "
        "else a file in the user data directory.",
        show_default=False,
    ),
]
CatalogOption = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        envvar="KLING_COST_CATALOG",
        metavar="CATALOG",
        help="Price catalog: kling-api, kling-app-credits, or a TOML file. Default: kling-api.",
        show_default=False,
    ),
]


def exit_code_for(exc: KlingCostError) -> int:
    if isinstance(exc, (PricingError, ValidationError, ConfigurationError, ReservationError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, BudgetExceeded):
        return EXIT_BUDGET
    if isinstance(exc, StorageError):
        return EXIT_STORAGE
    if isinstance(exc, KlingAPIError):
        return EXIT_KLING
    return EXIT_ERROR


_LONGEST_ERROR = 2000
"""Characters of an error line shown whole; a longer one (it quotes a huge input) keeps its
start and its end, where the advice is."""


def say_error(line: str) -> None:
    """``line`` on stderr as it is: no markup, no wrapping (and no rich to import)."""
    if len(line) > _LONGEST_ERROR:
        cut = len(line) - _LONGEST_ERROR + 40
        line = f"{line[:1200]}... ({cut:,} characters left out) ...{line[1200 + cut :]}"
    typer.echo(line, err=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    say_error(f"error: {message}")
    raise typer.Exit(code)


def error_text(exc: KlingCostError) -> str:
    """What a library error means to someone at the command line. The library speaks of its
    Python arguments; here missing credentials are named by what a shell can set."""
    if isinstance(exc, MissingCredentials):
        if len(exc.missing) == 1:
            given = "KLING_SECRET_KEY" if exc.missing == ("KLING_ACCESS_KEY",) else "KLING_ACCESS_KEY"
            return (
                f"{given} is set but {exc.missing[0]} is not: set {exc.missing[0]} too "
                f"(or unset {given} and set KLING_API_KEY)"
            )
        return (
            "no Kling credentials: set KLING_ACCESS_KEY and KLING_SECRET_KEY (or KLING_API_KEY) in "
            "the environment; for the simulator, the keys `kling-cost simulate` prints, with "
            "--base-url http://127.0.0.1:8790"
        )
    return str(exc)


@contextmanager
def boundary() -> Iterator[None]:
    """Turn library errors into one line on stderr and an exit code; never a traceback."""
    try:
        yield
    except KlingCostError as exc:
        fail(error_text(exc), exit_code_for(exc))


def parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date; use YYYY-MM-DD")


def _default(obj: object) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_json(data: object) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False) + "\n")


def one_line_usage_errors() -> None:
    """Usage errors (an unknown option, a bad value) as one line on stderr, like every other
    error of the CLI: ``error: <what is wrong> (see: kling-cost CMD --help)``, exit 2. Click
    prints a usage block of four lines; its ``show`` is replaced for this process only."""
    from typer import _click

    def show(self: Any, file: Any = None) -> None:
        ctx = getattr(self, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        say_error(f"error: {self.format_message()}{hint}")

    _click.exceptions.UsageError.show = show  # type: ignore[method-assign]


def run_main(app: Callable[[], T]) -> T:
    """Run the typer app; anything that escapes becomes one line, not a traceback."""
    try:
        return app()
    except KlingCostError as exc:
        say_error(f"error: {error_text(exc)}")
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        say_error("interrupted")
        sys.exit(130)
    except Exception as exc:  # an internal error: still one line, unless debugging
        internal_error(exc)


def internal_error(exc: Exception) -> NoReturn:
    """An error nobody planned for: one line on stderr and exit 1; with ``KLING_COST_DEBUG``
    set, ``exc`` is raised again for its traceback."""
    if os.environ.get("KLING_COST_DEBUG"):
        raise exc
    say_error(f"internal error: {type(exc).__name__}: {exc} (set KLING_COST_DEBUG=1 for the traceback)")
    sys.exit(EXIT_ERROR)
