"""What every command shares: consoles, option types, JSON output, the error boundary."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from ..errors import (
    BudgetExceeded,
    ConfigurationError,
    KlingAPIError,
    KlingCostError,
    PricingError,
    ReservationError,
    StorageError,
    ValidationError,
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

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


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def boundary() -> Iterator[None]:
    """Turn library errors into one line on stderr and an exit code; never a traceback."""
    try:
        yield
    except KlingCostError as exc:
        fail(str(exc), exit_code_for(exc))


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
    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False) + "\n")


def run_main(app: Callable[[], T]) -> T:
    """Run the typer app; anything that escapes becomes one line, not a traceback."""
    try:
        return app()
    except KlingCostError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # an internal error: still one line, unless debugging
        if os.environ.get("KLING_COST_DEBUG"):
            raise
        err_console.print(
            f"internal error: {type(exc).__name__}: {exc} (set KLING_COST_DEBUG=1 for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_ERROR)
