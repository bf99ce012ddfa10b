from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kling_cost import ValidationError, format_amount, parse_amount
from kling_cost.money import format_quantity, from_storage, to_storage


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", Decimal("10.000")),
        (3, Decimal("3.000")),
        (Decimal("0.5"), Decimal("0.500")),
        ("0.001", Decimal("0.001")),
        (" 2.25 ", Decimal("2.250")),
    ],
)
def test_parse_amount_accepts_exact_values(value: object, expected: Decimal) -> None:
    assert parse_amount(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        0.5,
        True,
        "abc",
        "NaN",
        "Infinity",
        "-Infinity",
        "0.0001",
        Decimal("1.2345"),
        "0",
        "-1",
        None,
        [1],
        "1e13",
    ],
)
def test_parse_amount_rejects(value: object) -> None:
    with pytest.raises(ValidationError):
        parse_amount(value)


def test_zero_and_negative_only_when_allowed() -> None:
    assert parse_amount("0", allow_zero=True) == 0
    assert parse_amount("-2.5", allow_negative=True) == Decimal("-2.5")


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_storage_round_trip(thousandths: int) -> None:
    amount = from_storage(thousandths)
    assert to_storage(amount) == thousandths
    assert amount == Decimal(thousandths) / 1000


def test_to_storage_refuses_finer_than_a_thousandth() -> None:
    with pytest.raises(ValidationError):
        to_storage(Decimal("0.0005"))


def test_format_amount() -> None:
    assert format_amount(Decimal("10.000")) == "10"
    assert format_amount(Decimal("1.500")) == "1.5"
    assert format_amount(Decimal("0.001")) == "0.001"
    # The form of every export: no sign on zero, no exponent, no trailing zeros.
    assert format_amount(Decimal("-0.000")) == "0" and format_amount(Decimal("-0")) == "0"
    assert format_amount(Decimal("1E+3")) == "1000" and format_amount(Decimal("-2.500")) == "-2.5"
    assert (
        format_amount(Decimal("0.125")) == "0.125"
        and format_amount(Decimal("1000000000000.000")) == "1000000000000"
    )


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        ("1", "units", "1 unit"),
        ("1.000", "credits", "1 credit"),
        ("0.5", "units", "0.5 units"),
        ("70", "credits", "70 credits"),
        ("0", "units", "0 units"),
        ("1.001", "units", "1.001 units"),
        ("1", "USD", "1 USD"),
    ],
)
def test_format_quantity_says_one_unit_in_the_singular(value: str, unit: str, text: str) -> None:
    assert format_quantity(Decimal(value), unit) == text
