"""Exact money: amounts are :class:`~decimal.Decimal`, storage is integer thousandths.

No float ever enters a money path: :func:`parse_amount` refuses floats, NaN, infinities and
anything finer than 0.001, so what is stored is exactly what was asked for.

The storage form (:func:`to_storage`, :func:`from_storage`) is not public: the ledger converts
at its edge (a ``Decimal`` in, a ``Decimal`` out) and keeps thousandths inside; reports convert
the ledger's integer sums. Neither is in ``__all__`` nor in :mod:`kling_cost`'s API.

Decimal arithmetic rounds to the *current* context's precision, which belongs to the caller
(``getcontext().prec = 6`` turns 1236.067 into 1236.07). Every amount computation in this
package therefore runs in :data:`MONEY`, its own context: through its methods here, and
through :func:`exact` (a decorator) or :func:`money_context` (a ``with`` block) elsewhere.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import ParamSpec, TypeVar

from .errors import ValidationError

__all__ = [
    "MAX_AMOUNT",
    "MONEY",
    "QUANTUM",
    "SCALE",
    "exact",
    "format_amount",
    "format_quantity",
    "json_exact",
    "money_context",
    "parse_amount",
]

P = ParamSpec("P")
R = TypeVar("R")

MONEY = Context(
    prec=60,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
"""The package's own decimal context: 60 digits hold any amount (at most 10**12 with three
decimals), any sum of them and any percentage exactly, whatever the caller's context says."""


def money_context() -> AbstractContextManager[Context]:
    """``with money_context(): ...``: Decimal arithmetic in :data:`MONEY` (the caller's
    context is back afterwards)."""
    return localcontext(MONEY)


def exact(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` in :data:`MONEY`: its Decimal arithmetic never depends on the caller's context."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext(MONEY):
            return func(*args, **kwargs)

    return wrapper


SCALE = 1000
"""Storage integers are thousandths of a unit (credit or API unit)."""

QUANTUM = Decimal("0.001")

MAX_AMOUNT = Decimal(10) ** 12
"""Largest accepted amount; keeps thousandths well inside a signed 64-bit integer."""

STORAGE_LIMIT_DIGITS = 15
"""Storable amounts are below 10**15: their thousandths stay inside a signed 64-bit integer."""


def parse_amount(
    value: object,
    *,
    what: str = "amount",
    allow_zero: bool = False,
    allow_negative: bool = False,
) -> Decimal:
    """Turn ``value`` (``Decimal``, ``int`` or a decimal string) into an exact ``Decimal``.

    Raises :class:`ValidationError` for floats, booleans, NaN, infinities, values finer than
    0.001, and zero or negative values unless allowed.
    """
    if isinstance(value, (bool, float)):
        raise ValidationError(
            f"{what} must be a Decimal, int or decimal string, not {type(value).__name__} "
            f"{value!r} (binary floats are inexact)"
        )
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, str):
        try:
            with localcontext(MONEY):  # exact; a malformed string raises, never becomes NaN
                dec = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError(f"{what} {value!r} is not a number") from None
    else:
        raise ValidationError(f"{what} must be a Decimal, int or decimal string, not {type(value).__name__}")
    if not dec.is_finite():
        raise ValidationError(f"{what} must be a finite number, not {dec}")
    if (dec and dec.adjusted() > MAX_AMOUNT.adjusted()) or MONEY.abs(dec) > MAX_AMOUNT:  # no overflow
        raise ValidationError(f"{what} {dec} is too large (at most {MAX_AMOUNT})")
    if dec != dec.quantize(QUANTUM, rounding=ROUND_DOWN, context=MONEY):
        raise ValidationError(f"{what} {dec} is finer than 0.001; amounts are kept in thousandths")
    if dec < 0 and not allow_negative:
        raise ValidationError(f"{what} must not be negative, got {dec}")
    if dec == 0 and not allow_zero:
        raise ValidationError(f"{what} must be greater than zero, got {dec}")
    return dec.quantize(QUANTUM, context=MONEY)


def to_storage(value: Decimal) -> int:
    """Exact ``Decimal`` -> integer thousandths. Refuses anything finer than 0.001.

    Integer arithmetic on the digits: no context, so no rounding, whatever its precision."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError(f"cannot store {value!r}: not a finite Decimal")
    if value and value.adjusted() >= STORAGE_LIMIT_DIGITS:
        raise ValidationError(f"cannot store {value}: too large")
    sign, digits, exponent = value.as_tuple()
    coefficient = int("".join(map(str, digits)))
    shift = int(exponent) + 3
    scaled: int
    if shift >= 0:
        scaled = coefficient * 10**shift
    else:
        scaled, rest = divmod(coefficient, 10**-shift)
        if rest:
            raise ValidationError(f"cannot store {value}: finer than 0.001")
    return -scaled if sign else scaled


def from_storage(value: int) -> Decimal:
    """Integer thousandths -> ``Decimal`` with three decimal places."""
    found = _DECIMALS.get(value)
    if found is None:
        found = Decimal(value).scaleb(-3, context=MONEY)  # exact: the same digits, exponent -3
        if len(_DECIMALS) >= _CACHED:
            _DECIMALS.clear()
        _DECIMALS[value] = found
    return found


def storage_amount(value: object, *, what: str = "amount", allow_zero: bool = False) -> int:
    """``to_storage(parse_amount(value, what=..., allow_zero=...))``, remembered for the
    positive amounts seen lately (a service reserves the same few prices over and over).

    Only exact ``Decimal`` (finite), ``int`` and ``str`` values are remembered, keyed by type
    and value: ``True``, ``1.5`` (a float) and their like never meet a remembered amount,
    whatever they compare equal to, and are refused by :func:`parse_amount` as before."""
    kind = type(value)
    if (kind is int or kind is str or kind is Decimal) and (
        not isinstance(value, Decimal) or value.is_finite()  # a signalling NaN cannot be hashed
    ):
        key = (kind, value)
        found = _MILLI.get(key)
        if found is not None:
            return found
        milli = to_storage(parse_amount(value, what=what, allow_zero=allow_zero))
        if milli > 0:
            if len(_MILLI) >= _CACHED:
                _MILLI.clear()
            _MILLI[key] = milli
        return milli
    return to_storage(parse_amount(value, what=what, allow_zero=allow_zero))


_CACHED = 1024
"""Entries each cache below keeps before it starts again (bounded memory)."""
_DECIMALS: dict[int, Decimal] = {}
"""Thousandths -> their ``Decimal`` (immutable, so shared safely)."""
_MILLI: dict[tuple[type, object], int] = {}
"""(type, amount) -> thousandths, for amounts :func:`storage_amount` accepted."""


def format_amount(value: Decimal) -> str:
    """Shortest exact rendering: ``Decimal('10.000')`` -> ``'10'``, ``Decimal('1.500')`` -> ``'1.5'``;
    never an exponent, never ``-0``. The one form of amounts in exports, CSV and the CLI."""
    if not value:
        return "0"
    if value == value.to_integral_value(context=MONEY):
        return str(value.quantize(Decimal(1), context=MONEY))
    return format(value.normalize(MONEY), "f")


def format_quantity(value: Decimal, unit: str) -> str:
    """An amount with its unit, in the singular for exactly one: ``1 unit``, ``1 credit``,
    ``0.5 units``, ``70 credits`` (units are named in the plural: ``units``, ``credits``)."""
    text = format_amount(value)
    if text == "1" and unit.endswith("s"):
        unit = unit[:-1]
    return f"{text} {unit}"


def json_exact(payload: object, *, separators: tuple[str, str] | None = None) -> str:
    """``payload`` as JSON with every :class:`~decimal.Decimal` written as an exact JSON number
    (:func:`format_amount`: never through a float, never an exponent). What a Kling-compatible
    server (the simulator, the proxy) answers."""
    marks: dict[str, str] = {}

    def encode(obj: object) -> object:
        if isinstance(obj, Decimal):
            mark = f"\x00dec{len(marks)}\x00"
            marks[mark] = format_amount(obj)
            return mark
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

    text = json.dumps(payload, default=encode, ensure_ascii=False, separators=separators)
    for mark, number in marks.items():
        text = text.replace(json.dumps(mark), number)
    return text
