from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from kling_cost import ConfigurationError, PricingError, estimate, load_catalog, parse_catalog

# The seed document's credit table, row by row.
SEED_TABLE = [
    (dict(duration=5, mode="standard"), Decimal(10)),
    (dict(duration=5, mode="professional"), Decimal(35)),
    (dict(duration=10, mode="standard"), Decimal(20)),
    (dict(duration=10, mode="professional"), Decimal(70)),
    (dict(duration=5, mode="standard", audio=True), Decimal(50)),
    (dict(duration=10, mode="professional", audio=True), Decimal(200)),
    (dict(kind="image"), Decimal(1)),
    (dict(kind="tryon"), Decimal(5)),
]


@pytest.mark.parametrize(("fields", "credits"), SEED_TABLE)
def test_seed_credit_table(fields: dict[str, object], credits: Decimal) -> None:
    est = estimate(catalog="kling-app-credits", **fields)
    assert est.amount == credits
    assert est.unit == "credits"
    assert est.usd is None


@pytest.mark.parametrize(
    "fields",
    [
        dict(duration=10, mode="std", audio=True),  # unlisted: no guess
        dict(duration=5, mode="pro", audio=True),
        dict(duration=7),
        dict(kind="lip-sync", duration=5),
        dict(duration=5, mode="std", audio=True, model="kling-v1"),
    ],
)
def test_app_credits_unlisted_combinations_raise(fields: dict[str, object]) -> None:
    with pytest.raises(PricingError):
        estimate(catalog="kling-app-credits", **fields)


def test_api_units_and_usd() -> None:
    std = estimate(catalog="kling-api", model="kling-v2-6", mode="std", duration=5)
    assert (std.amount, std.usd) == (Decimal("1.5"), Decimal("0.21"))
    pro_audio = estimate(catalog="kling-api", model="kling-v2-6", mode="pro", duration=5, audio=True)
    assert (pro_audio.amount, pro_audio.usd) == (Decimal(5), Decimal("0.70"))
    pro = estimate(catalog="kling-api", model="kling-v2-6", mode="pro", duration=5)
    assert pro.usd == Decimal("0.35")
    line = pro_audio.breakdown[0]
    assert (line.basis, line.rate, line.quantity) == ("per_second", Decimal(1), 5)


def test_api_other_kinds() -> None:
    assert estimate(kind="lip-sync", duration=12).amount == Decimal("1.5")  # 3 started 5 s blocks
    img = estimate(kind="image", model="kling-v1-5", n=3, image_input=True)
    assert (img.amount, img.usd, img.pack) == (Decimal(24), Decimal("0.084"), "image")
    assert estimate(kind="tryon").usd == Decimal("0.07")
    assert estimate(kind="video-extend", model="kling-v1-6", mode="pro").amount == Decimal("3.5")
    assert estimate(kind="effects", mode="pro").amount == Decimal("3.5")
    assert estimate(
        kind="multi-image2video", model="kling-v3", mode="pro", duration=10, audio=True
    ).amount == Decimal(12)


def test_default_model_is_klings_default() -> None:
    est = estimate(mode="pro", duration=10)
    assert est.request.model == "kling-v1"
    assert est.amount == 7


@pytest.mark.parametrize(
    ("fields", "field", "value", "allowed"),
    [
        (dict(model="kling-v2-6", duration=7), "duration", 7, ("5", "10")),
        (dict(model="kling-v9"), "model", "kling-v9", None),
        (dict(model="kling-v2-master", mode="std"), "mode", "std", ("pro",)),
        (dict(model="kling-v2-6", mode="std", audio=True), "sound", True, ("off",)),
        (dict(kind="image", n=0), "n", 0, None),
        (dict(kind="image", n=10), "n", 10, None),
        (dict(mode="ultra"), "mode", "ultra", ("std", "pro")),
        (dict(kind="holo"), "kind", "holo", None),
        (dict(duration=-5), "duration", -5, None),
        (dict(kind="lip-sync"), "duration", None, None),
    ],
)
def test_invalid_requests_name_field_value_and_allowed(
    fields: dict[str, object], field: str, value: object, allowed: tuple[str, ...] | None
) -> None:
    with pytest.raises(PricingError) as info:
        estimate(**fields)
    assert info.value.field == field
    assert info.value.value == value
    if allowed is not None:
        assert info.value.allowed == allowed


def test_message_wording() -> None:
    with pytest.raises(PricingError, match=r"duration 7 is not offered for kling-v2-6 std .*allowed: 5, 10"):
        estimate(model="kling-v2-6", mode="std", duration=7)


def test_dated_pricing(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        """
name = "mine"
extends = "kling-api"

[[prices]]
kind = "video"
models = ["kling-v2-6"]
modes = ["std"]
durations = [5, 10]
per_second = "0.35"
effective_from = 2026-06-01
source = "our contract, amendment 2"
"""
    )
    before = estimate(catalog=str(path), model="kling-v2-6", duration=10, as_of=date(2026, 5, 31))
    after = estimate(catalog=str(path), model="kling-v2-6", duration=10, as_of=date(2026, 6, 1))
    assert before.amount == 3 and after.amount == Decimal("3.5")
    assert after.breakdown[0].source == "our contract, amendment 2"
    # the other prices are inherited
    assert estimate(catalog=str(path), kind="tryon").amount == 1
    cat = load_catalog(str(path))
    group = [
        g
        for g in cat.versions()
        if g[0].models == ("kling-v2-6",) and g[0].modes == ("std",) and not g[0].audio
    ]
    assert [e.rate for e in group[0]] == [Decimal("0.3"), Decimal("0.35")]


def test_before_first_price_is_an_error() -> None:
    with pytest.raises(PricingError, match="no text2video price in force on 2020-01-01"):
        estimate(as_of=date(2020, 1, 1))


def test_older_per_task_list_applies_to_past_dates() -> None:
    # kling-v2-master: per-task table before the per-second list, both 10 units for 5 s.
    old = estimate(model="kling-v2-master", mode="pro", duration=5, as_of=date(2025, 1, 1))
    new = estimate(model="kling-v2-master", mode="pro", duration=5, as_of=date(2026, 2, 1))
    assert old.breakdown[0].basis == "amount" and new.breakdown[0].basis == "per_second"
    assert old.amount == new.amount == 10
    with pytest.raises(PricingError):  # v2-6 did not exist in the older list
        estimate(model="kling-v2-6", as_of=date(2025, 1, 1))


BAD_CATALOGS = [
    ("name = \n", "not valid TOML"),
    (
        'unit = "units"\n[[prices]]\nkind="video"\namount="1"\neffective_from=2026-01-01\nsource="x"\n',
        "name",
    ),
    ('name="x"\nunit="coins"\n', "unit"),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="abc"\neffective_from=2026-01-01\n'
        'source="s"\n',
        "prices[0].amount (line 3)",
    ),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="1"\nper_second="1"\n'
        'effective_from=2026-01-01\nsource="s"\n',
        "exactly one price",
    ),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="1"\nsource="s"\n',
        "effective_from",
    ),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="1"\neffective_from=2026-01-01\n',
        "source",
    ),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="0.0001"\neffective_from=2026-01-01\n'
        'source="s"\n',
        "finer than 0.001",
    ),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="-1"\neffective_from=2026-01-01\n'
        'source="s"\n',
        ">= 0",
    ),
    ('name="x"\nunit="units"\ncolour="red"\n', "colour"),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\nmodes=["ultra"]\namount="1"\n'
        'effective_from=2026-01-01\nsource="s"\n',
        "modes",
    ),
    (
        'name="x"\nunit="units"\n[[prices]]\nkind="video"\namount="1"\neffective_from=2026-01-01\n'
        'source="s"\n[[prices]]\nkind="video"\namount="2"\neffective_from=2026-01-01\nsource="t"\n',
        "prices[1] (line 8): same match fields",
    ),
    ('name="x"\nextends="nope"\n', "extends"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_CATALOGS)
def test_malformed_catalogs(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        load_catalog(str(path))
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_catalog_file() -> None:
    with pytest.raises(ConfigurationError, match="neither a shipped catalog"):
        load_catalog("/nonexistent/catalog.toml")


def test_catalog_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_COST_CATALOG", "kling-app-credits")
    assert estimate(duration=5).amount == 10


def test_parse_catalog_from_text() -> None:
    cat = parse_catalog(
        'name="tiny"\nunit="credits"\n[[prices]]\nkind="tryon"\namount="2.5"\n'
        'effective_from=2026-01-01\nsource="s"\n'
    )
    assert estimate(kind="tryon", catalog=cat).amount == Decimal("2.5")


def test_catalogs_that_extend_each_other_in_a_cycle_are_refused(tmp_path: Path) -> None:
    """(Found by review: a RecursionError, "internal error" at the CLI.)"""
    (tmp_path / "a.toml").write_text('name = "a"\nextends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('name = "b"\nextends = "c.toml"\n')
    (tmp_path / "c.toml").write_text('name = "c"\nextends = "a.toml"\n')
    with pytest.raises(ConfigurationError, match=r"cycle \(a\.toml -> b\.toml -> c\.toml -> a\.toml\)"):
        load_catalog(str(tmp_path / "a.toml"))
    # a chain without a cycle, through the same files, still loads
    (tmp_path / "c.toml").write_text('name = "c"\nextends = "kling-api"\n')
    assert load_catalog(str(tmp_path / "a.toml")).name == "a"
