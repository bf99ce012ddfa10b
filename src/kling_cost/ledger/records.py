"""The ledger's rows as the ledger works with them, and the public models made from them.

Inside the ledger, amounts stay integer thousandths (``*_milli``) and times integer
milliseconds (``*_ms``), as stored: :class:`BudgetRow` and :class:`ReservationRow` are read
from SQL, handed to the hooks and written back without a single conversion. The public
:class:`~kling_cost.budgets.Budget` and :class:`~.models.Reservation` (``Decimal`` amounts,
datetimes) are made from them only where the ledger hands something out
(:meth:`BudgetRow.to_budget`, :meth:`ReservationRow.to_reservation`). Read-only models
(charges, alerts) are made straight from their rows.

Also here: the ``SELECT`` heads shared by the parts, ids, idempotency keys and metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from os import urandom
from typing import Any

from ..budgets import Budget
from ..errors import ReservationError, ValidationError
from ..money import from_storage
from ..text import bad_text, clean_json, clean_text
from ..timestamps import EPOCH, from_ms, to_ms
from .backend import Cursor
from .models import AlertRecord, Charge, Reservation

__all__ = [
    "ALERT_SELECT",
    "BUDGET_SELECT",
    "CHARGE_SELECT",
    "RES_COLUMNS",
    "RES_SELECT",
    "BudgetRow",
    "ReservationRow",
    "alert_from_row",
    "budget_row",
    "charge_from_row",
    "check_key",
    "clean_metadata",
    "new_id",
    "reservation_by",
    "reservation_id_of",
    "reservation_row",
    "text_or_none",
]

MAX_KEY = 200
"""Longest idempotency key, in characters."""
PREVIEW = 100
"""Characters of a prompt kept as its preview (the rest only as its SHA-256)."""

BUDGET_SELECT = (
    "SELECT id, scope, period, tz, limit_milli, max_per_request_milli, thresholds, unit FROM budgets"
)
RES_COLUMNS = (
    "id, idempotency_key, amount_milli, status, scopes, created_at, expires_at, "
    "actual_milli, settled_at, task_id, metadata, windows, unit, catalog, catalog_date"
)
"""The columns of a reservation row, in the order :func:`reservation_row` reads them."""
RES_SELECT = f"SELECT {RES_COLUMNS} FROM reservations"
CHARGE_SELECT = (
    "SELECT c.id, c.reservation_id, c.idempotency_key, c.created_at, c.settled_at, "
    "c.estimate_milli, c.actual_milli, c.scopes, c.task_id, c.kind, c.model, c.mode, "
    "c.duration, c.audio, c.prompt_hash, c.prompt_preview, c.metadata, c.status, c.unit, c.catalog, "
    "c.catalog_date, c.overage_milli FROM charges c"
)


@dataclass(slots=True)
class BudgetRow:
    """A budget as stored: its limits in integer thousandths. Read-only by convention, like
    :class:`ReservationRow` (not ``frozen``: these rows are made several times per operation,
    and a frozen dataclass costs five times as much to build)."""

    id: int
    scope: str
    window: str
    tz: str
    limit_milli: int
    max_per_request_milli: int | None
    thresholds: tuple[Decimal, ...]
    unit: str

    # What hooks written against earlier versions read (they were given a Budget): converted
    # only when asked, never by the ledger itself.
    @property
    def limit(self) -> Decimal:
        return from_storage(self.limit_milli)

    @property
    def max_per_request(self) -> Decimal | None:
        milli = self.max_per_request_milli
        return None if milli is None else from_storage(milli)

    def to_budget(self) -> Budget:
        return Budget(
            id=self.id,
            scope=self.scope,
            window=self.window,
            tz=self.tz,
            limit=from_storage(self.limit_milli),
            max_per_request=(
                None if self.max_per_request_milli is None else from_storage(self.max_per_request_milli)
            ),
            thresholds=self.thresholds,
            unit=self.unit,
        )


def budget_row(row: Sequence[Any]) -> BudgetRow:
    """A :class:`BudgetRow` from a row of :data:`BUDGET_SELECT`, decoded once per distinct
    row (every reservation reads its budgets; they rarely change). Rows are read-only."""
    try:
        found = _BUDGETS.get(row)
    except TypeError:  # a driver's row that cannot be hashed
        return _budget_row(row)
    if found is None:
        found = _budget_row(row)
        if len(_BUDGETS) > 1024:
            _BUDGETS.clear()
        _BUDGETS[row] = found
    return found


def _budget_row(row: Sequence[Any]) -> BudgetRow:
    return BudgetRow(
        id=int(row[0]),
        scope=row[1],
        window=row[2],
        tz=row[3],
        limit_milli=int(row[4]),
        max_per_request_milli=None if row[5] is None else int(row[5]),
        thresholds=thresholds_of(row[6]),
        unit=row[7],
    )


_ONE_MS = timedelta(milliseconds=1)
_BUDGETS: dict[Sequence[Any], BudgetRow] = {}
_THRESHOLDS: dict[str, tuple[Decimal, ...]] = {}
_SCOPES: dict[str, tuple[str, ...]] = {}
_WINDOWS: dict[str, tuple[tuple[int, str], ...]] = {}


def scopes_of(text: str) -> tuple[str, ...]:
    """A reservation's scopes column (a JSON list) as a tuple, decoded once per distinct text."""
    found = _SCOPES.get(text)
    if found is None:
        found = tuple(json.loads(text))
        if len(_SCOPES) > 1024:
            _SCOPES.clear()
        _SCOPES[text] = found
    return found


def windows_of(text: str) -> tuple[tuple[int, str], ...]:
    """A reservation's windows column (JSON ``[[budget id, window key], ...]``) as tuples,
    decoded once per distinct text (reservations of one period share it)."""
    found = _WINDOWS.get(text)
    if found is None:
        found = tuple((int(b), str(k)) for b, k in json.loads(text))
        if len(_WINDOWS) > 1024:
            _WINDOWS.clear()
        _WINDOWS[text] = found
    return found


def windows_json(refs: tuple[tuple[int, str], ...]) -> str:
    """The windows column's text for a reservation's (budget id, window key) pairs, encoded
    once per distinct set (reservations of one period share it)."""
    found = _WINDOWS_JSON.get(refs)
    if found is None:
        found = json.dumps(refs)
        if len(_WINDOWS_JSON) > 1024:
            _WINDOWS_JSON.clear()
        _WINDOWS_JSON[refs] = found
    return found


_WINDOWS_JSON: dict[tuple[tuple[int, str], ...], str] = {}


def thresholds_of(text: str) -> tuple[Decimal, ...]:
    """The thresholds column (a JSON list of decimal strings) as Decimals, decoded once per
    distinct text: every reservation reads its budgets, and their thresholds rarely change."""
    found = _THRESHOLDS.get(text)
    if found is None:
        found = tuple(Decimal(t) for t in json.loads(text))
        if len(_THRESHOLDS) > 1024:
            _THRESHOLDS.clear()
        _THRESHOLDS[text] = found
    return found


@dataclass(slots=True)
class ReservationRow:
    """A reservation as stored: amounts in thousandths, times in milliseconds. Read-only by
    convention: a change makes a new row (``dataclasses.replace``), never mutates one.

    ``idempotency_key`` is None when the caller gave none (the public reservation shows its
    id instead). ``revived`` and ``fresh`` describe the call that returned it (see
    :class:`~.models.Reservation`)."""

    id: str
    idempotency_key: str | None
    amount_milli: int
    status: str
    scopes: tuple[str, ...]
    created_at_ms: int
    expires_at_ms: int
    actual_milli: int | None = None
    settled_at_ms: int | None = None
    task_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    windows: tuple[tuple[int, str], ...] = ()
    unit: str = "units"
    catalog: str | None = None
    catalog_date: str | None = None
    revived: bool = False
    fresh: bool = False
    metadata_json: str | None = field(default=None, compare=False, repr=False)
    """The ``metadata`` column's text when known (as read, or as written): reused instead of
    encoding unchanged metadata again (a charge row copies it). None: encode ``metadata``."""
    scopes_json: str | None = field(default=None, compare=False, repr=False)
    """The ``scopes`` column's text when known, likewise."""

    def metadata_text(self) -> str:
        """The ``metadata`` column's text: the stored one when known, else encoded."""
        return self.metadata_json if self.metadata_json is not None else json.dumps(self.metadata)

    def scopes_text(self) -> str:
        """The ``scopes`` column's text: the stored one when known, else encoded."""
        return self.scopes_json if self.scopes_json is not None else json.dumps(self.scopes)

    def settled(
        self,
        status: str,
        settled_at_ms: int,
        actual_milli: int | None,
        task_id: str | None,
        metadata: dict[str, Any],
        metadata_json: str | None,
    ) -> ReservationRow:
        """This row moved to ``status`` (a new row; what :meth:`.Settlement.mark` wrote)."""
        return ReservationRow(
            self.id,
            self.idempotency_key,
            self.amount_milli,
            status,
            self.scopes,
            self.created_at_ms,
            self.expires_at_ms,
            actual_milli,
            settled_at_ms,
            task_id,
            metadata,
            self.windows,
            self.unit,
            self.catalog,
            self.catalog_date,
            self.revived,
            self.fresh,
            metadata_json,
            self.scopes_json,
        )

    # What hooks written against earlier versions read (they were given a Reservation):
    # converted only when asked, never by the ledger itself.
    @property
    def amount(self) -> Decimal:
        return from_storage(self.amount_milli)

    @property
    def actual(self) -> Decimal | None:
        return None if self.actual_milli is None else from_storage(self.actual_milli)

    @property
    def created_at(self) -> datetime:
        return from_ms(self.created_at_ms)

    @property
    def expires_at(self) -> datetime:
        return from_ms(self.expires_at_ms)

    @property
    def settled_at(self) -> datetime | None:
        return None if self.settled_at_ms is None else from_ms(self.settled_at_ms)

    def to_reservation(self) -> Reservation:
        actual, settled_at = self.actual_milli, self.settled_at_ms
        # A hot path (once per call): the frozen dataclass's __init__ sets each of its 17
        # fields through object.__setattr__; its instance dict is filled in one go instead
        # (every field given, none derived: what __init__ would store).
        out: Reservation = _new(Reservation)
        out.__dict__.update(
            {
                "id": self.id,
                "idempotency_key": self.idempotency_key or self.id,
                "amount": from_storage(self.amount_milli),
                "status": self.status,
                "scopes": self.scopes,
                "created_at": EPOCH + self.created_at_ms * _ONE_MS,  # from_ms, inline
                "expires_at": EPOCH + self.expires_at_ms * _ONE_MS,
                "actual": None if actual is None else from_storage(actual),
                "settled_at": None if settled_at is None else EPOCH + settled_at * _ONE_MS,
                "task_id": self.task_id,
                "metadata": self.metadata,
                "windows": self.windows,
                "revived": self.revived,
                "fresh": self.fresh,
                "unit": self.unit,
                "catalog": self.catalog,
                "catalog_date": self.catalog_date,
            }
        )
        return out


_new = object.__new__


def reservation_row(row: Sequence[Any]) -> ReservationRow:
    """A :class:`ReservationRow` from a row of :data:`RES_SELECT` (positional, in field order)."""
    actual, settled_at, meta = row[7], row[8], row[10]
    return ReservationRow(
        row[0],
        row[1],
        int(row[2]),
        row[3],
        scopes_of(row[4]),
        int(row[5]),
        int(row[6]),
        None if actual is None else int(actual),
        None if settled_at is None else int(settled_at),
        row[9],
        {} if meta == "{}" else json.loads(meta),
        windows_of(row[11]),
        row[12],
        row[13],
        row[14],
        False,  # revived
        False,  # fresh
        meta,
        row[4],
    )


def reservation_by(cur: Cursor, column: str, value: str, lock: str = "") -> ReservationRow | None:
    """The reservation whose ``column`` (``id``, ``idempotency_key`` or ``task_id``: fixed
    names only) is ``value``; ``lock``: the backend's row-lock suffix, if any."""
    cur.execute(RES_SELECT + f" WHERE {column} = ?" + lock, (value,))
    row = cur.fetchone()
    return None if row is None else reservation_row(row)


def charge_from_row(row: Sequence[Any]) -> Charge:
    return Charge(
        id=int(row[0]),
        reservation_id=row[1],
        idempotency_key=row[2],
        created_at=from_ms(int(row[3])),
        settled_at=from_ms(int(row[4])),
        estimate=from_storage(int(row[5])),
        actual=from_storage(int(row[6])),
        scopes=tuple(json.loads(row[7])),
        task_id=row[8],
        kind=row[9],
        model=row[10],
        mode=row[11],
        duration=row[12],
        audio=bool(row[13]),
        prompt_hash=row[14],
        prompt_preview=row[15],
        metadata=json.loads(row[16]),
        status=row[17],
        unit=row[18],
        catalog=row[19],
        catalog_date=row[20],
        overage=from_storage(int(row[21])),
    )


def new_id(now: datetime, now_ms: int | None = None) -> str:
    """Time-ordered id (48-bit milliseconds + 80 random bits): inserts append, pages stay hot.
    ``now_ms``: ``to_ms(now)`` when the caller has it already."""
    # urandom(10).hex() is what secrets.token_hex(10) does, less two calls
    return f"{to_ms(now) if now_ms is None else now_ms:012x}{urandom(10).hex()}"


def reservation_id_of(ref: Reservation | ReservationRow | str) -> str:
    if isinstance(ref, (Reservation, ReservationRow)):
        return ref.id
    if isinstance(ref, str) and ref:
        if bad_text(ref) is not None:  # no id holds it (ids are hex): the same answer everywhere
            raise ReservationError(f"reservation {ref!r} does not exist in this ledger")
        return ref
    raise ValidationError(f"expected a Reservation or its id, not {ref!r}")


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
        raise ValidationError(f"idempotency_key must be a non-empty string of at most {MAX_KEY} characters")
    why = bad_text(key)
    if why is not None:
        raise ValidationError(f"idempotency_key {key!r} {why}; use printable text")
    return key


def text_or_none(value: object) -> str | None:
    """A text column's value: NUL and lone surrogates (which PostgreSQL refuses) cleaned out,
    so what Kling charged is always recorded, whatever text came with it."""
    return None if value is None else clean_text(str(value))


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """JSON-safe metadata; a ``prompt`` is replaced by its SHA-256 and a 100-character preview.

    Strings and keys are cleaned of what PostgreSQL text cannot hold (NUL, lone surrogates:
    replaced by U+FFFD), so metadata can never make a reservation or a commit fail.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata must be a mapping")
    meta = dict(metadata)
    prompt = meta.pop("prompt", None)
    if isinstance(prompt, str):
        digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
        meta.setdefault("prompt_hash", digest)
        meta.setdefault("prompt_preview", prompt[:PREVIEW])
    try:
        text = json.dumps(meta, default=json_default)
        cleaned = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"metadata is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ValidationError("metadata is nested too deeply to be recorded; flatten it") from None
    if "\\u0000" in text or "\\ud" in text:  # a NUL or a surrogate escape: clean every string
        cleaned = clean_json(cleaned)
    return dict(cleaned)


def json_default(obj: object) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


ALERT_SELECT = (
    "SELECT id, budget_id, scope, period, window_key, kind, threshold, used_milli, reserved_milli, "
    "limit_milli, message, details, status, attempts, last_error, next_attempt_at, created_at, "
    "delivered_at, cleared_at, resolved_status, resolved_at, sent_to FROM alerts"
)


def alert_from_row(row: Sequence[Any]) -> AlertRecord:
    return AlertRecord(
        id=int(row[0]),
        budget_id=int(row[1]),
        scope=row[2],
        window=row[3],
        window_key=row[4],
        kind=row[5],
        threshold=row[6],
        used=from_storage(int(row[7])),
        reserved=from_storage(int(row[8])),
        limit=from_storage(int(row[9])),
        message=row[10],
        details=json.loads(row[11]),
        status=row[12],
        attempts=int(row[13]),
        last_error=row[14],
        next_attempt_at=from_ms(int(row[15])),
        created_at=from_ms(int(row[16])),
        delivered_at=None if row[17] is None else from_ms(int(row[17])),
        cleared_at=None if row[18] is None else from_ms(int(row[18])),
        resolved_status=row[19],
        resolved_at=None if row[20] is None else from_ms(int(row[20])),
        sent_to=tuple(json.loads(row[21])),
    )
