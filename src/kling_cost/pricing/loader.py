"""Reading price catalogs from TOML: the shipped ones by name, or a user's file by path."""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, KlingCostError
from ..money import parse_amount
from .catalog import (
    BASES,
    DEFAULT_PACK,
    IMAGE_RESOLUTIONS,
    KINDS,
    MODEL_GROUP,
    MODES,
    PACKS,
    Catalog,
    PriceEntry,
    match_key,
)

__all__ = ["BUILTIN_CATALOGS", "DEFAULT_CATALOG", "load_catalog", "parse_catalog"]

BUILTIN_CATALOGS = ("kling-api", "kling-app-credits")
DEFAULT_CATALOG = "kling-api"
ENV_CATALOG = "KLING_COST_CATALOG"

_TOP_KEYS = {
    "name",
    "unit",
    "description",
    "extends",
    "usd_per_unit",
    "models",
    "defaults",
    "prices",
}
_ENTRY_KEYS = {
    "kind",
    "models",
    "modes",
    "durations",
    "audio",
    "image_input",
    "effects",
    "amount",
    "per_second",
    "per_image",
    "per_block",
    "block_seconds",
    "effective_from",
    "source",
    "pack",
    "resolutions",
    "video_input",
    "voice_control",
    "multi_image",
}
_FLAGS = ("audio", "image_input", "video_input", "voice_control", "multi_image")
_NO_MODEL = ("lipsync", "avatar", "audio")
"""Price kinds whose requests name no model (so no ``[defaults]`` either)."""
_UNITS = ("credits", "units")

_cache: dict[tuple[str, float], Catalog] = {}


def load_catalog(name_or_path: str | os.PathLike[str] | None = None) -> Catalog:
    """A shipped catalog by name (``kling-api``, ``kling-app-credits``) or a TOML file by path.

    With no argument: ``$KLING_COST_CATALOG``, else ``kling-api``.
    Raises :class:`ConfigurationError` naming the file, line or key and what is wrong.
    """
    if name_or_path is None:
        name_or_path = os.environ.get(ENV_CATALOG) or DEFAULT_CATALOG
    text_name = os.fspath(name_or_path)
    if text_name in BUILTIN_CATALOGS:
        key = (text_name, 0.0)
        if key not in _cache:
            _cache[key] = parse_catalog(_shipped_text(text_name), origin=text_name)
        return _cache[key]
    path = Path(text_name).expanduser()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        raise ConfigurationError(
            f"catalog {text_name!r} is neither a shipped catalog ({', '.join(BUILTIN_CATALOGS)}) "
            "nor a readable file"
        ) from None
    key = (str(path.resolve()), mtime)
    if key not in _cache:
        chain = _LOADING.get()
        if key[0] in chain:  # a.toml extends b.toml extends a.toml: no catalog comes out of it
            cycle = " -> ".join(Path(p).name for p in (*chain[chain.index(key[0]) :], key[0]))
            raise ConfigurationError(f"{path}: its extends form a cycle ({cycle}); break it")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path}: cannot read catalog: {exc}") from None
        token = _LOADING.set((*chain, key[0]))
        try:
            _cache[key] = parse_catalog(text, origin=str(path), base_dir=path.parent)
        finally:
            _LOADING.reset(token)
    return _cache[key]


_LOADING: ContextVar[tuple[str, ...]] = ContextVar("kling_cost_catalogs_loading", default=())
"""The catalog files being loaded, outermost first (each extending the next)."""


def _shipped_text(name: str) -> str:
    """The TOML text of a shipped catalog: a file beside this module, or (a zipped install)
    package data read through importlib.resources, whose import costs a CLI run ~6 ms."""
    path = Path(__file__).with_name("catalogs") / f"{name}.toml"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from importlib import resources

    return (
        resources.files(__package__ or "kling_cost.pricing")
        .joinpath(f"catalogs/{name}.toml")
        .read_text(encoding="utf-8")
    )


def parse_catalog(text: str, *, origin: str = "<catalog>", base_dir: Path | None = None) -> Catalog:
    """Parse and validate a catalog document; every problem names ``origin`` and the key."""
    try:
        doc = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{origin}: not valid TOML: {exc}") from None
    lines = _entry_lines(text)
    return _Parser(origin, lines, base_dir).catalog(doc)


def _entry_lines(text: str) -> list[int]:
    return [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[prices\]\]", line)]


class _Parser:
    def __init__(self, origin: str, lines: list[int], base_dir: Path | None) -> None:
        self.origin = origin
        self.lines = lines
        self.base_dir = base_dir

    def fail(self, where: str, problem: str, index: int | None = None) -> ConfigurationError:
        line = ""
        if index is not None and index < len(self.lines):
            line = f" (line {self.lines[index]})"
        return ConfigurationError(f"{self.origin}: {where}{line}: {problem}")

    def catalog(self, doc: dict[str, Any]) -> Catalog:
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise self.fail(
                ", ".join(sorted(unknown)),
                f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}",
            )
        base: Catalog | None = None
        if "extends" in doc:
            base = self.base(doc["extends"])
        name = doc.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail("name", "required: a non-empty string naming the catalog")
        unit = doc.get("unit", base.unit if base else None)
        if unit not in _UNITS:
            raise self.fail("unit", f"must be one of {', '.join(_UNITS)}, got {unit!r}")
        if base is not None and unit != base.unit:
            raise self.fail("unit", f"{unit!r} differs from the extended catalog's {base.unit!r}")
        usd = dict(base.usd_per_unit) if base else {}
        usd.update(self.usd(doc.get("usd_per_unit", {})))
        models = dict(base.models) if base else {}
        models.update(self.models(doc.get("models", {})))
        defaults = dict(base.defaults) if base else {}
        defaults.update(self.defaults(doc.get("defaults", {}), models))
        raw_entries = doc.get("prices", [])
        if not isinstance(raw_entries, list):
            raise self.fail("prices", "must be an array of tables ([[prices]])")
        entries = [self.entry(i, raw) for i, raw in enumerate(raw_entries)]
        seen: dict[tuple[object, ...], int] = {}
        for i, entry in enumerate(entries):
            key = (*match_key(entry), entry.effective_from)
            if key in seen:
                raise self.fail(
                    f"prices[{i}]",
                    f"same match fields and effective_from as prices[{seen[key]}] "
                    f"({entry.describe()} from {entry.effective_from}); give it another date",
                    i,
                )
            seen[key] = i
        if base is None and not entries:
            raise self.fail("prices", "a catalog needs at least one [[prices]] entry")
        for i, entry in enumerate(entries):
            for model in entry.models or ():
                group = MODEL_GROUP.get(entry.kind, entry.kind)
                if models.get(group) and model not in models[group]:
                    raise self.fail(
                        f"prices[{i}].models",
                        f"{model!r} is not listed in [models].{group}",
                        i,
                    )
        all_entries = (base.entries if base else ()) + tuple(entries)
        return Catalog(
            name=name.strip(),
            unit=str(unit),
            entries=all_entries,
            models=models,
            usd_per_unit=usd,
            description=str(doc.get("description", base.description if base else "")),
            path=None if self.origin in BUILTIN_CATALOGS else self.origin,
            defaults=defaults,
        )

    def base(self, value: object) -> Catalog:
        if not isinstance(value, str):
            raise self.fail("extends", "must be a catalog name or a path")
        if value not in BUILTIN_CATALOGS and self.base_dir is not None:
            candidate = self.base_dir / value
            if candidate.exists():
                value = str(candidate)
        if value == self.origin:
            raise self.fail("extends", "a catalog cannot extend itself")
        try:
            return load_catalog(value)
        except KlingCostError as exc:
            raise self.fail("extends", str(exc)) from None

    def usd(self, raw: object) -> dict[str, Decimal]:
        if not isinstance(raw, dict):
            raise self.fail("usd_per_unit", 'must be a table: video/image/tryon = "0.14"')
        out: dict[str, Decimal] = {}
        for pack, value in raw.items():
            if pack not in PACKS:
                raise self.fail(f"usd_per_unit.{pack}", f"unknown pack; allowed: {', '.join(PACKS)}")
            out[pack] = self.decimal(f"usd_per_unit.{pack}", value, finest=None)
        return out

    def models(self, raw: object) -> dict[str, tuple[str, ...]]:
        if not isinstance(raw, dict):
            raise self.fail("models", "must be a table of model lists per pack")
        out: dict[str, tuple[str, ...]] = {}
        for group, value in raw.items():
            if group not in PACKS:
                raise self.fail(f"models.{group}", f"unknown group; allowed: {', '.join(PACKS)}")
            out[group] = self.strings(f"models.{group}", value, None)
        return out

    def defaults(self, raw: object, models: dict[str, tuple[str, ...]]) -> dict[str, str]:
        if not isinstance(raw, dict):
            raise self.fail("defaults", 'must be a table: kind = "model id"')
        out: dict[str, str] = {}
        for kind, model in raw.items():
            if kind not in KINDS or kind in _NO_MODEL:
                allowed = ", ".join(k for k in KINDS if k not in _NO_MODEL)
                raise self.fail(f"defaults.{kind}", f"unknown kind; allowed: {allowed}")
            group = MODEL_GROUP.get(str(kind), str(kind))
            if not isinstance(model, str) or (models.get(group) and model not in models[group]):
                raise self.fail(f"defaults.{kind}", f"{model!r} is not listed in [models].{group}")
            out[kind] = model
        return out

    def decimal(
        self, where: str, value: object, *, finest: str | None = "0.001", index: int | None = None
    ) -> Decimal:
        if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            dec = Decimal(value)
        elif isinstance(value, str):
            try:
                dec = Decimal(value.strip())
            except ArithmeticError:
                raise self.fail(where, f"{value!r} is not a number", index) from None
        else:
            raise self.fail(where, f"must be a number or a decimal string, got {value!r}", index)
        if not dec.is_finite() or dec < 0:
            raise self.fail(where, f"must be a finite number >= 0, got {value!r}", index)
        if finest is not None:
            try:
                parse_amount(dec, what=where, allow_zero=True)
            except KlingCostError as exc:
                raise self.fail(where, str(exc), index) from None
        return dec

    def strings(self, where: str, value: object, index: int | None) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "must be a non-empty list of strings", index)
        return tuple(value)

    def entry(self, i: int, raw: object) -> PriceEntry:
        at = f"prices[{i}]"
        if not isinstance(raw, dict):
            raise self.fail(at, "must be a table", i)
        unknown = set(raw) - _ENTRY_KEYS
        if unknown:
            raise self.fail(
                f"{at}.{sorted(unknown)[0]}",
                f"unknown key; allowed: {', '.join(sorted(_ENTRY_KEYS))}",
                i,
            )
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise self.fail(f"{at}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}", i)
        bases = [b for b in BASES if b in raw]
        if len(bases) != 1:
            raise self.fail(at, f"needs exactly one price: {', '.join(BASES)} (found {len(bases)})", i)
        basis = bases[0]
        rate = self.decimal(f"{at}.{basis}", raw[basis], index=i)
        block: int | None = None
        if basis == "per_block":
            block = raw.get("block_seconds")
            if not isinstance(block, int) or isinstance(block, bool) or block <= 0:
                raise self.fail(f"{at}.block_seconds", "per_block needs block_seconds > 0", i)
        elif "block_seconds" in raw:
            raise self.fail(f"{at}.block_seconds", "only allowed with per_block", i)
        eff = raw.get("effective_from")
        if isinstance(eff, str):
            try:
                eff = date.fromisoformat(eff)
            except ValueError:
                raise self.fail(f"{at}.effective_from", f"{eff!r} is not a date", i) from None
        if not isinstance(eff, date) or hasattr(eff, "hour"):
            raise self.fail(f"{at}.effective_from", "required: a date such as 2026-01-01", i)
        source = raw.get("source")
        if not isinstance(source, str) or not source.strip():
            raise self.fail(f"{at}.source", "required: where this price comes from", i)
        durations: tuple[int, ...] | None = None
        if "durations" in raw:
            value = raw["durations"]
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
            ):
                raise self.fail(f"{at}.durations", "must be a list of positive whole seconds", i)
            durations = tuple(value)
        if basis in ("per_second", "per_block") and kind not in (
            "video",
            "lipsync",
            "effects",
            "motion",
            "avatar",
        ):
            raise self.fail(f"{at}.{basis}", f"a duration-based price makes no sense for {kind}", i)
        if basis == "per_image" and kind != "image":
            raise self.fail(f"{at}.per_image", 'per_image is only for kind = "image"', i)
        modes = self.strings(f"{at}.modes", raw["modes"], i) if "modes" in raw else None
        if modes and not set(modes) <= set(MODES):
            raise self.fail(f"{at}.modes", f"allowed modes: {', '.join(MODES)} (720p, 1080p, 4k)", i)
        resolutions = None
        if "resolutions" in raw:
            resolutions = tuple(r.lower() for r in self.strings(f"{at}.resolutions", raw["resolutions"], i))
            if kind != "image" or not set(resolutions) <= set(IMAGE_RESOLUTIONS):
                raise self.fail(
                    f"{at}.resolutions",
                    f"image resolutions only ({', '.join(IMAGE_RESOLUTIONS)}); video resolutions are modes",
                    i,
                )
        for flag in _FLAGS:
            if flag in raw and not isinstance(raw[flag], bool):
                raise self.fail(f"{at}.{flag}", "must be true or false", i)
        pack = raw.get("pack", DEFAULT_PACK[kind])
        if pack not in PACKS:
            raise self.fail(f"{at}.pack", f"must be one of {', '.join(PACKS)}", i)
        return PriceEntry(
            kind=kind,
            basis=basis,
            rate=rate,
            effective_from=eff,
            source=source.strip(),
            models=self.strings(f"{at}.models", raw["models"], i) if "models" in raw else None,
            modes=modes,
            durations=durations,
            audio=bool(raw.get("audio", False)),
            image_input=raw.get("image_input"),
            effects=self.strings(f"{at}.effects", raw["effects"], i) if "effects" in raw else None,
            block_seconds=block,
            pack=pack,
            origin=f"{self.origin}:{self.lines[i] if i < len(self.lines) else '?'}",
            resolutions=resolutions,
            video_input=raw.get("video_input"),
            voice_control=raw.get("voice_control"),
            multi_image=raw.get("multi_image"),
        )
