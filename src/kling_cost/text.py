"""Text every layer can store: PostgreSQL ``text`` refuses NUL (``\\x00``) and any string that
is not valid UTF-8 (a lone surrogate in Python), so requests carrying them are refused before
anything is reserved, and what reaches the ledger anyway is cleaned."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError

__all__ = ["REPLACEMENT", "bad_text", "check_storable", "clean_json", "clean_text", "find_bad_text"]

REPLACEMENT = "\ufffd"
_BAD = re.compile("[\x00\ud800-\udfff]")


def bad_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (``None`` when it can)."""
    found = _BAD.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\x00)"
    return f"contains a lone surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode text"


def clean_text(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD."""
    return _BAD.sub(REPLACEMENT, value)


def clean_json(value: Any) -> Any:
    """A JSON-shaped value (dicts, lists, strings, numbers) with every string and key cleaned."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def find_bad_text(value: Any, where: str = "") -> tuple[str, str] | None:
    """The first string (or key) in ``value`` that cannot be stored: ``(field path, why)``."""
    if isinstance(value, str):
        why = bad_text(value)
        return None if why is None else (where or "value", why)
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            path = f"{where}.{name}" if where else name
            why = bad_text(name)
            if why is not None:
                return (f"field name {path!r}", why)
            found = find_bad_text(item, path)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_bad_text(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def check_storable(value: Any, where: str = "") -> None:
    """Raise :class:`ValidationError` naming the first string of ``value`` that no ledger can
    record. Called before anything is reserved: Kling would charge for such a request."""
    try:
        found = find_bad_text(value, where)
    except RecursionError:
        raise ValidationError(f"{where or 'the request'} is nested too deeply; flatten it") from None
    if found is not None:
        path, why = found
        raise ValidationError(f"{path} {why}; remove it (nothing was reserved or sent)")
