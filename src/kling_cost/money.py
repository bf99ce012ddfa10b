"""Exact money: amounts are :class:`~decimal.Decimal`, storage is integer thousandths.

No float ever enters a money path: :func:`parse_amount` refuses floats, NaN, infinities and
anything finer than 0.001, so what is stored is exactly what was asked for.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .errors import ValidationError

__all__ = [
    "MAX_AMOUNT",
    "QUANTUM",
    "SCALE",
    "format_amount",
    "from_storage",
    "parse_amount",
    "to_storage",
]

SCALE = 1000
"""Storage integers are thousandths of a unit (credit or API unit)."""

QUANTUM = Decimal("0.001")

MAX_AMOUNT = Decimal(10) ** 12
"""Largest accepted amount; keeps thousandths well inside a signed 64-bit integer."""


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
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError(f"{what} {value!r} is not a number") from None
    else:
        raise ValidationError(f"{what} must be a Decimal, int or decimal string, not {type(value).__name__}")
    if not dec.is_finite():
        raise ValidationError(f"{what} must be a finite number, not {dec}")
    if (dec and dec.adjusted() > MAX_AMOUNT.adjusted()) or abs(dec) > MAX_AMOUNT:  # adjusted(): no overflow
        raise ValidationError(f"{what} {dec} is too large (at most {MAX_AMOUNT})")
    if dec != dec.quantize(QUANTUM, rounding="ROUND_DOWN"):
        raise ValidationError(f"{what} {dec} is finer than 0.001; amounts are kept in thousandths")
    if dec < 0 and not allow_negative:
        raise ValidationError(f"{what} must not be negative, got {dec}")
    if dec == 0 and not allow_zero:
        raise ValidationError(f"{what} must be greater than zero, got {dec}")
    return dec.quantize(QUANTUM)


def to_storage(value: Decimal) -> int:
    """Exact ``Decimal`` -> integer thousandths. Refuses anything finer than 0.001."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError(f"cannot store {value!r}: not a finite Decimal")
    scaled = value * SCALE
    if scaled != scaled.to_integral_value():
        raise ValidationError(f"cannot store {value}: finer than 0.001")
    return int(scaled)


def from_storage(value: int) -> Decimal:
    """Integer thousandths -> ``Decimal`` with three decimal places."""
    return Decimal(value).scaleb(-3)  # exact: the same digits, exponent -3


def format_amount(value: Decimal) -> str:
    """Shortest exact rendering: ``Decimal('10.000')`` -> ``'10'``, ``Decimal('1.500')`` -> ``'1.5'``."""
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")
