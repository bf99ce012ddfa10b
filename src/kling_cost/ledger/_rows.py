"""Row <-> model conversions, ids, times and metadata: shared by every ledger module."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from ..budgets import Budget
from ..errors import BudgetExceeded, ReservationError, ValidationError
from ..money import from_storage
from ..text import bad_text, clean_json, clean_text
from .models import AlertRecord, Charge, Reservation

MAX_KEY = 200
PREVIEW = 100
RETRIES = 8


class Cursor(Protocol):
    """The part of a DB-API cursor the ledger uses (qmark placeholders)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Conflict(Exception):
    """A concurrent transaction won (unique key, deadlock, serialization): retry the operation."""


class Refused(Exception):
    def __init__(self, error: BudgetExceeded) -> None:
        self.error = error


def utc_now() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def to_ms(at: datetime) -> int:
    """Aware datetime -> integer milliseconds since the epoch (exact, no float)."""
    if at.tzinfo is None:
        raise ValidationError("times must be timezone-aware")
    return (at - EPOCH) // ONE_MS


def from_ms(ms: int) -> datetime:
    return EPOCH + ms * ONE_MS


BUDGET_SELECT = (
    "SELECT id, scope, period, tz, limit_milli, max_per_request_milli, thresholds, unit FROM budgets"
)
RES_SELECT = (
    "SELECT id, idempotency_key, amount_milli, status, scopes, created_at, expires_at, "
    "actual_milli, settled_at, task_id, metadata, windows, unit, catalog, catalog_date FROM reservations"
)
CHARGE_SELECT = (
    "SELECT c.id, c.reservation_id, c.idempotency_key, c.created_at, c.settled_at, "
    "c.estimate_milli, c.actual_milli, c.scopes, c.task_id, c.kind, c.model, c.mode, "
    "c.duration, c.audio, c.prompt_hash, c.prompt_preview, c.metadata, c.status, c.unit, c.catalog, "
    "c.catalog_date, c.overage_milli FROM charges c"
)


def budget_from_row(row: Sequence[Any]) -> Budget:
    return Budget(
        id=int(row[0]),
        scope=row[1],
        window=row[2],
        tz=row[3],
        limit=from_storage(int(row[4])),
        max_per_request=None if row[5] is None else from_storage(int(row[5])),
        thresholds=tuple(Decimal(t) for t in json.loads(row[6])),
        unit=row[7],
    )


def reservation_from_row(row: Sequence[Any]) -> Reservation:
    return Reservation(
        id=row[0],
        idempotency_key=row[1] or row[0],
        amount=from_storage(int(row[2])),
        status=row[3],
        scopes=tuple(json.loads(row[4])),
        created_at=from_ms(int(row[5])),
        expires_at=from_ms(int(row[6])),
        actual=None if row[7] is None else from_storage(int(row[7])),
        settled_at=None if row[8] is None else from_ms(int(row[8])),
        task_id=row[9],
        metadata=json.loads(row[10]),
        windows=tuple((int(b), str(k)) for b, k in json.loads(row[11])),
        unit=row[12],
        catalog=row[13],
        catalog_date=row[14],
    )


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


def replace_reservation(res: Reservation, **changes: Any) -> Reservation:
    return replace(res, **changes)


def new_id(now: datetime) -> str:
    """Time-ordered id (48-bit milliseconds + 80 random bits): inserts append, pages stay hot."""
    return f"{to_ms(now):012x}{secrets.token_hex(10)}"


def reservation_id_of(ref: Reservation | str) -> str:
    if isinstance(ref, Reservation):
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
