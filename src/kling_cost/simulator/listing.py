"""Cursor listings of the new standard: ``POST /tasks`` and ``POST /account/billing/...``.

A query is ``start_time``/``end_time`` (ms; numbers or numeric strings), ``limit`` and
filters; a ``cursor`` from an earlier answer carries the whole query and where it stopped,
and overrides everything else in the body. Rows come newest first, paged by keyset (a row
arriving between two pages never shifts the next one). The answer is
``{result, count, next_cursor, has_more}``; ``count`` is the number of rows in this page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from .errors import SimError

__all__ = ["MAX_LIMIT", "Query", "page", "parse_query"]

MAX_LIMIT = 500
T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    start: int | None
    end: int | None
    limit: int
    filters: tuple[tuple[str, tuple[str, ...]], ...]
    after: tuple[int, int] | None = None
    """``(time, seq)`` of the last row already served."""

    def matches(self, values: Mapping[str, str | None]) -> bool:
        return all(values.get(key) in allowed for key, allowed in self.filters)

    def cursor(self, after: tuple[int, int]) -> str:
        doc = {"s": self.start, "e": self.end, "l": self.limit, "f": self.filters, "a": list(after)}
        return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def _millis(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)) or value != int(value):
        raise SimError(1201, f"{name} must be a time in milliseconds (a number or a numeric string)")
    return int(value)


def _limit(body: Mapping[str, Any], default: int) -> int:
    value = body.get("limit", default)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise SimError(1201, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return value


def _filters(
    body: Mapping[str, Any], keys: Sequence[str], top_level: bool
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    raw = body.get("filters", [])
    usage = f'filters must be a list of {{"key": {"|".join(keys)}, "values": [text, ...]}}'
    if not isinstance(raw, list):
        raise SimError(1201, usage)
    out: dict[str, tuple[str, ...]] = {}
    for item in raw:
        if not isinstance(item, Mapping) or item.get("key") not in keys:
            raise SimError(1201, usage)
        values = item.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise SimError(1201, usage)
        out[str(item["key"])] = tuple(values)
    if top_level:  # the billing endpoints also take each filter as a field of its own
        for key in keys:
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise SimError(1201, f"{key} must be text")
            out[key] = (value,)
    return tuple(sorted(out.items()))


def _from_cursor(text: object) -> Query:
    if not isinstance(text, str):
        raise SimError(1201, "cursor is not one this API gave")
    try:
        doc = json.loads(base64.urlsafe_b64decode(text.encode()))
        filters = tuple((str(k), tuple(str(v) for v in values)) for k, values in doc["f"])
        after = doc["a"]
        return Query(
            start=None if doc["s"] is None else int(doc["s"]),
            end=None if doc["e"] is None else int(doc["e"]),
            limit=int(doc["l"]),
            filters=filters,
            after=(int(after[0]), int(after[1])),
        )
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
        raise SimError(1201, "cursor is not one this API gave") from None


def parse_query(
    body: object, *, keys: Sequence[str], default_limit: int, top_level_filters: bool = False
) -> Query:
    """The query of a listing body; raises ``SimError`` 1201 naming what is wrong."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise SimError(1200, "request body must be a JSON object")
    if body.get("cursor"):
        return _from_cursor(body["cursor"])
    start, end = _millis(body, "start_time"), _millis(body, "end_time")
    if start is not None and end is not None and start > end:
        raise SimError(1201, "start_time must not be after end_time")
    return Query(start, end, _limit(body, default_limit), _filters(body, keys, top_level_filters))


def page(
    rows: Sequence[T],
    query: Query,
    *,
    key: Callable[[T], tuple[int, int]],
    values: Callable[[T], Mapping[str, str | None]],
    render: Callable[[T], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``rows`` (any order) for ``query``: newest ``key`` first."""
    kept = [
        r
        for r in rows
        if (query.start is None or key(r)[0] >= query.start)
        and (query.end is None or key(r)[0] <= query.end)
        and (query.after is None or key(r) < query.after)
        and query.matches(values(r))
    ]
    kept.sort(key=key, reverse=True)
    chosen = kept[: query.limit]
    has_more = len(kept) > query.limit
    return {
        "result": [render(r) for r in chosen],
        "count": len(chosen),
        "next_cursor": query.cursor(key(chosen[-1])) if has_more else None,
        "has_more": has_more,
    }
