"""Outside review of issue 12's own value checks (cli/_values.py replaced Typer's pydantic
checks): a value pydantic refused is still refused, with the option named, exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kling_cost.cli import app


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["estimate", "--duration", "５"], "'５' is not a whole number"),  # fullwidth digit
        (["estimate", "--duration", "١٠"], "'١٠' is not a whole number"),  # Arabic-Indic digits
        (["estimate", "--count", "1e5"], "'1e5' is not a whole number"),  # not 100000
        (["estimate", "--count", "5."], "'5.' is not a whole number"),
        (["estimate", "--duration", "1e-400"], "'1e-400' is not a whole number"),  # not 0
        (["simulate", "--task-seconds", "٢"], "'٢' is not a number"),
    ],
)
def test_numbers_pydantic_refused_are_still_refused(args: list[str], shown: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[-2]}'" in result.output and shown in result.output


def test_whole_numbers_written_as_pydantic_takes_them_are_exact() -> None:
    """``"5.0"`` and ``"1_0"`` are whole numbers; a huge one is not rounded through a float."""
    result = CliRunner().invoke(app, ["estimate", "--count", "1_0.00", "--json"])
    assert result.exit_code == 0 and '"count": 10' in result.output, result.output
    huge = "12345678901234567891"
    result = CliRunner().invoke(app, ["estimate", "--count", huge + ".0", "--json"])
    assert result.exit_code == 0 and f'"count": {huge}' in result.output, result.output
