"""The bill's runs as a store of the ledger (``ledger.runs``): the ``bill_runs`` and
``bill_differences`` tables of migration 10 (:mod:`.schema_bill`).

A run (a reconciliation with Kling's bill, ``kind="reconcile"``) is recorded whole, with its
differences, in one transaction: a reader never sees a run without its differences. Amounts
are integer thousandths in the tables and ``Decimal`` outside; a run's ``summary`` and each
difference's ``details`` are JSON. :mod:`kling_cost.bill.reconcile` writes the runs and the
dashboard reads the last one; this store runs the SQL and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..money import from_storage, to_storage
from ..text import clean_text
from ..timestamps import from_ms, to_ms
from .backend import Cursor, retrying
from .records import clean_metadata

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["BillDifference", "BillRun", "RunStore"]

MAX_SQL_INT = 2**63 - 1

_RUN_COLUMNS = "id, kind, started_at, finished_at, since_at, until_at, status, fixed, summary"
_DIFF_COLUMNS = (
    "run_id, seq, category, task_id, unit, pack_type, ledger_milli, kling_milli, day, api_key_name, "
    "model, details"
)


@dataclass(frozen=True)
class BillDifference:
    """One line of a run: a task (or a total) and what each side says of it."""

    category: str
    task_id: str | None = None
    unit: str | None = None
    pack_type: str | None = None
    ledger_amount: Decimal | None = None
    """What the ledger charged (``None``: nothing)."""
    kling_amount: Decimal | None = None
    """What Kling's bill says (``None``: no row)."""
    day: str | None = None
    api_key_name: str | None = None
    model: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "task_id": self.task_id,
            "unit": self.unit,
            "pack_type": self.pack_type,
            "ledger": None if self.ledger_amount is None else str(self.ledger_amount),
            "kling": None if self.kling_amount is None else str(self.kling_amount),
            "day": self.day,
            "api_key_name": self.api_key_name,
            "model": self.model,
            "details": self.details,
        }


@dataclass(frozen=True)
class BillRun:
    """A recorded run: its period, outcome (``status``), how many charges it recorded
    (``fixed``), its summary, and (when read with them) its differences in order."""

    id: int
    kind: str
    started_at: datetime
    finished_at: datetime | None
    since: datetime
    until: datetime
    status: str
    fixed: int
    summary: dict[str, Any]
    differences: tuple[BillDifference, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "status": self.status,
            "fixed": self.fixed,
            "summary": self.summary,
            "differences": [d.to_dict() for d in self.differences],
        }


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"a bill run's {what} must be a non-empty string, not {value!r}")
    return clean_text(value)


def _optional(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"a bill difference's {what} must be a string or None, not {value!r}")
    return clean_text(value)


def _milli(value: Decimal | None) -> int | None:
    return None if value is None else to_storage(value)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else from_storage(int(value))


def _moment(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(f"a bill run's {what} must be an aware datetime, not {value!r}")
    return value


def _run(row: Sequence[Any], differences: tuple[BillDifference, ...] = ()) -> BillRun:
    return BillRun(
        id=int(row[0]),
        kind=row[1],
        started_at=from_ms(int(row[2])),
        finished_at=None if row[3] is None else from_ms(int(row[3])),
        since=from_ms(int(row[4])),
        until=from_ms(int(row[5])),
        status=row[6],
        fixed=int(row[7]),
        summary=dict(json.loads(row[8])),
        differences=differences,
    )


def _difference(row: Sequence[Any]) -> BillDifference:
    return BillDifference(
        category=row[2],
        task_id=row[3],
        unit=row[4],
        pack_type=row[5],
        ledger_amount=_decimal(row[6]),
        kling_amount=_decimal(row[7]),
        day=row[8],
        api_key_name=row[9],
        model=row[10],
        details=dict(json.loads(row[11])),
    )


class RunStore:
    """One ledger's bill runs: record one with its differences, read the last, list them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def record(
        self,
        kind: str,
        *,
        since: datetime,
        until: datetime,
        status: str,
        summary: Mapping[str, Any],
        differences: Iterable[BillDifference] = (),
        started_at: datetime | None = None,
        fixed: int = 0,
    ) -> BillRun:
        """Record a finished run and its ``differences`` (in their order) in one transaction;
        ``started_at`` defaults to the ledger's now, ``finished_at`` is the ledger's now."""
        kind, status = _text(kind, "kind"), _text(status, "status")
        since, until = _moment(since, "since"), _moment(until, "until")
        started = None if started_at is None else _moment(started_at, "started_at")
        if isinstance(fixed, bool) or not isinstance(fixed, int) or fixed < 0:
            raise ValidationError(f"a bill run's fixed count must be a whole number >= 0, not {fixed!r}")
        body = json.dumps(clean_metadata(summary))
        rows = [
            (
                d.category,
                _optional(d.task_id, "task_id"),
                _optional(d.unit, "unit"),
                _optional(d.pack_type, "pack_type"),
                _milli(d.ledger_amount),
                _milli(d.kling_amount),
                _optional(d.day, "day"),
                _optional(d.api_key_name, "api_key_name"),
                _optional(d.model, "model"),
                json.dumps(clean_metadata(d.details)),
            )
            for d in differences
        ]
        for row in rows:
            _text(row[0], "category")

        def run() -> int:
            with self.ledger.transaction() as cur:
                now = to_ms(cur.now)
                start = now if started is None else to_ms(started)
                cur.execute(
                    "INSERT INTO bill_runs (kind, started_at, finished_at, since_at, until_at, status, "
                    "fixed, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (kind, start, now, to_ms(since), to_ms(until), status, fixed, body),
                )
                run_id = int(cur.fetchone()[0])
                for seq, row in enumerate(rows, start=1):
                    cur.execute(
                        f"INSERT INTO bill_differences ({_DIFF_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, seq, *row),
                    )
                return run_id

        found = self.run(retrying(run))
        if found is None:  # pragma: no cover - written just above
            raise ValidationError("a bill run vanished as it was recorded")
        return found

    def run(self, run_id: int) -> BillRun | None:
        """One run by id, with its differences."""
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(f"SELECT {_RUN_COLUMNS} FROM bill_runs WHERE id = ?", (int(run_id),))
            row = cur.fetchone()
            return None if row is None else _run(row, self._differences(cur, int(row[0])))

    def last(self, kind: str) -> BillRun | None:
        """The latest run of ``kind`` (by start, then id), with its differences."""
        kind = _text(kind, "kind")
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(
                f"SELECT {_RUN_COLUMNS} FROM bill_runs WHERE kind = ? "
                "ORDER BY started_at DESC, id DESC LIMIT 1",
                (kind,),
            )
            row = cur.fetchone()
            return None if row is None else _run(row, self._differences(cur, int(row[0])))

    def runs(self, kind: str | None = None, *, limit: int = 50) -> list[BillRun]:
        """Runs, newest first, of one ``kind`` or all; without their differences."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a whole number of at least 1, not {limit!r}")
        where, params = ("", ()) if kind is None else (" WHERE kind = ?", (_text(kind, "kind"),))
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(
                f"SELECT {_RUN_COLUMNS} FROM bill_runs{where} ORDER BY started_at DESC, id DESC LIMIT ?",
                (*params, min(limit, MAX_SQL_INT)),
            )
            return [_run(row) for row in cur.fetchall()]

    def _differences(self, cur: Cursor, run_id: int) -> tuple[BillDifference, ...]:
        cur.execute(f"SELECT {_DIFF_COLUMNS} FROM bill_differences WHERE run_id = ? ORDER BY seq", (run_id,))
        return tuple(_difference(row) for row in cur.fetchall())
