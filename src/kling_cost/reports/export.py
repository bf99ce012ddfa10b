"""Exports of the raw charges: JSON Lines (the seed's ``UsageTracker`` fields and more) and CSV."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

from ..budgets import validate_scope, validate_tz
from ..errors import ValidationError
from ..ledger import Charge, Ledger
from ..money import format_amount
from . import _time

__all__ = ["EXPORT_FIELDS", "charge_record", "csv_cell", "csv_row", "export_charges"]

EXPORT_FIELDS = (
    "timestamp",
    "task_id",
    "credits",
    "unit",
    "model",
    "duration",
    "mode",
    "prompt_preview",
    "status",
    "estimate",
    "audio",
    "kind",
    "scopes",
    "settled_at",
    "prompt_hash",
    "reservation_id",
    "id",
    "catalog",
    "catalog_date",
    "overage",
)
"""``timestamp`` is the reservation time (ISO 8601, UTC); ``credits`` what Kling charged (the
seed's field name) and ``estimate``, both counted in ``unit`` (``units`` or ``credits``: what the
reservation counted); ``catalog`` and ``catalog_date`` name the price list that priced it;
``overage`` how far the charge took a budget past its limit (0 within every limit), in ``unit``."""


def charge_record(charge: Charge) -> dict[str, Any]:
    """One charge as an export record (amounts stay ``Decimal``)."""
    return {
        "timestamp": charge.created_at.isoformat(),
        "task_id": charge.task_id,
        "credits": charge.actual,
        "unit": charge.unit,
        "model": charge.model,
        "duration": charge.duration,
        "mode": charge.mode,
        "prompt_preview": charge.prompt_preview,
        "status": charge.status,
        "estimate": charge.estimate,
        "audio": charge.audio,
        "kind": charge.kind,
        "scopes": list(charge.scopes),
        "settled_at": charge.settled_at.isoformat(),
        "prompt_hash": charge.prompt_hash,
        "reservation_id": charge.reservation_id,
        "id": charge.id,
        "catalog": charge.catalog,
        "catalog_date": charge.catalog_date,
        "overage": charge.overage,
    }


def _jsonl(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        encoded = (
            format_amount(value) if isinstance(value, Decimal) else json.dumps(value, ensure_ascii=False)
        )
        parts.append(f"{json.dumps(key)}: {encoded}")
    return "{" + ", ".join(parts) + "}\n"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format_amount(value)  # the same text as in JSON Lines: 70, 2.5, 0.125
    return str(value)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")


def csv_cell(value: Any) -> str:
    """``value`` as a CSV cell that no spreadsheet runs as a formula: text starting with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return (a prompt such as ``=HYPERLINK(...)``) gets a
    leading ``'`` (OWASP's advice); numbers, negative ones included, are left as they are."""
    text = _csv_value(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def csv_row(values: Iterable[Any]) -> str:
    """One CSV line ending in ``\\n``; cells through :func:`csv_cell`, and any cell holding a
    line break (``\\r`` included, which a ``\\n``-terminated writer leaves bare) quoted."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([csv_cell(v) for v in values])
    return buffer.getvalue()[:-2] + "\n"


def export_charges(
    ledger: Ledger,
    out: TextIO,
    fmt: str = "jsonl",
    *,
    since: datetime | date | str | None = None,
    until: datetime | date | str | None = None,
    scope: str | None = None,
    tz: str = "UTC",
    now: datetime | None = None,
) -> int:
    """Write the charges reserved in ``[since, until)`` to ``out``, oldest first; returns how many.

    ``fmt``: ``jsonl`` (one JSON object per line; amounts are exact JSON numbers, read them
    with ``json.loads(line, parse_float=Decimal)``) or ``csv`` (a header, then one row per
    charge; scopes joined by ``;``; text that a spreadsheet would run as a formula starts
    with ``'``, see :func:`csv_cell`). Both write every amount in the same shortest exact form
    (:func:`~kling_cost.money.format_amount`: ``70``, ``2.5``, ``0.125``; no exponent, no
    trailing zeros). Every record has the ``unit`` its amounts count.
    ``since``/``until`` as in :func:`kling_cost.reports.report`.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValidationError(f"export format {fmt!r} is unknown; use jsonl or csv")
    tz = validate_tz(tz)  # also when no date needs it: a mistyped zone is an error, not ignored
    moment = now or ledger.clock()
    start, end = _time.parse_period(since, until, tz, moment)
    charges = ledger.charges(None if scope is None else validate_scope(scope), since=start, until=end)
    if fmt == "jsonl":
        for charge in charges:
            out.write(_jsonl(charge_record(charge)))
        return len(charges)
    out.write(csv_row(EXPORT_FIELDS))
    for charge in charges:
        record = charge_record(charge)
        out.write(csv_row(record[f] for f in EXPORT_FIELDS))
    return len(charges)
