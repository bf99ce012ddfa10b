"""Command-line values checked without pydantic.

Typer (0.2x) checks every parameter's value through a pydantic ``TypeAdapter``: the first
value of a run imports pydantic and builds one adapter per parameter, which costs about as
much as all the rest of ``kling-cost estimate``. Text, whole numbers, numbers, booleans and
paths (and lists of them) are checked here instead, with the same rules (``min``/``max``; the
path checks of ``typer.Option``/``typer.Argument``). Anything else (choices, dates, tuples,
custom parsers, clamping) stays with Typer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import typer

try:  # Typer's coercion layer (0.2x); older Typers check values with Click's types, no pydantic
    from typer._coercion import RuntimeParam
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover - depends on the installed Typer
    RuntimeParam = None  # type: ignore[assignment,misc]

__all__ = ["use_plain_values"]

_KINDS = (str, int, float, bool, Path)
_BOOLS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("", "0", "off", "f", "false", "n", "no"), False),
}


def _plain_kind(param: Any) -> type | None:
    """The type of ``param``'s values when it is one checked here (a list's items count), else None."""
    descriptor = getattr(param, "type_descriptor", None)
    info = getattr(descriptor, "parameter_info", None)
    if descriptor is None or info is None or getattr(descriptor, "file_annotation", None) is not None:
        return None
    if getattr(info, "parser", None) is not None or getattr(info, "clamp", False):
        return None
    annotation = descriptor.annotation
    if get_origin(annotation) is list and len(get_args(annotation)) == 1:
        annotation = get_args(annotation)[0]
    if annotation is Path and getattr(info, "path_type", None) not in (None, Path):
        return None
    return annotation if annotation in _KINDS else None


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _PlainValue(RuntimeParam):
        """Checks one value (or each of a list) the way Typer's pydantic adapter does. Typer
        has already turned a missing value into None (or ``()``) and rejects those itself."""

        kind: type

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return [self._one(item, param, ctx) for item in value]
            return self._one(value, param, ctx)

        def _one(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.kind is str:
                return value if isinstance(value, str) else str(value)
            if self.kind is bool:  # a flag's value is a bool already; text comes from a variable
                word = value if isinstance(value, bool) else _BOOLS.get(str(value).strip().lower())
                if word is None:
                    raise typer.BadParameter(f"{value!r} is not a boolean (true or false)", ctx, param)
                return word
            if self.kind is Path:
                path = value if isinstance(value, Path) else Path(value)
                return coerce_cli_path(path, self.parameter_info, path_type=Path, param=param, ctx=ctx)
            number = _number(value, self.kind, param, ctx)
            low, high = self.parameter_info.min, self.parameter_info.max
            if low is not None and not number >= low:
                raise typer.BadParameter(f"Input should be greater than or equal to {low}", ctx, param)
            if high is not None and not number <= high:
                raise typer.BadParameter(f"Input should be less than or equal to {high}", ctx, param)
            return number


def _number(value: Any, kind: type, param: Any, ctx: Any) -> int | float:
    """``value`` as an ``int`` (``"5"``, ``" 5 "``, ``"5.0"``, ``"1_000"``) or a finite ``float``,
    read as pydantic reads text: ASCII digits only (``"５"`` or ``"٥"`` are refused, though
    Python's ``int`` takes them) and a whole number written without an exponent or a bare
    point (``"1e5"``, ``"5."`` and ``"1e-400"`` are refused, not read as 100000, 5 and 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number: int | float = value
    else:
        text = str(value).strip()
        what = "a number" if kind is float else "a whole number"
        whole, point, fraction = text.partition(".")
        try:
            if not text.isascii():
                raise ValueError(text)
            if kind is float:
                number = float(text)
            elif point and (not fraction.isdigit() or fraction.strip("0")):
                raise ValueError(text)  # "5.0" is the whole number 5, as with pydantic; "5.5" is not
            else:
                number = int(whole)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not {what}", ctx, param) from None
    if kind is float:
        if not math.isfinite(number):
            raise typer.BadParameter(f"{value!r} is not a finite number", ctx, param)
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise typer.BadParameter(f"{value!r} is not a whole number", ctx, param)
    return int(number)


def use_plain_values(param: Any) -> None:
    """Check ``param``'s values here when they are of a kind this module knows. Typer builds
    a parameter's checker on first use and keeps it, so the one set here is the one used."""
    if RuntimeParam is None or getattr(param, "_runtime_param", False) is not None:
        return
    kind = _plain_kind(param)
    if kind is not None:
        descriptor = param.type_descriptor
        param._runtime_param = _PlainValue(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, kind=kind
        )
