"""The proxy's rows as a store of the ledger (``ledger.proxy``): virtual keys and which key
owns which task (``proxy_keys``, ``proxy_tasks``).

Kept in the ledger so that every proxy process, on every machine sharing a PostgreSQL ledger,
sees the same keys (a revocation holds on the next request everywhere) and the same owners.
No secret is stored here: see :mod:`kling_cost.proxy.keys`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import AuthError, ConcurrencyLimited, InvalidRequest, ValidationError
from ..money import from_storage, to_storage
from ..text import bad_text
from ..timestamps import from_ms, to_ms
from .backend import Cursor, retrying
from .limits import BudgetRequest, Limits

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = ["CLAIM_GRACE", "OPEN_LOOKBACK", "KeyRecord", "OwnedTask", "ProxyStore", "key_state", "refused_key"]

CLAIM_GRACE = timedelta(minutes=2)
"""A task claimed by a key whose reservation is not written yet counts as open this long (the
proxy reserves right after it claims; a claim older than this belongs to a process that died)."""

OPEN_LOOKBACK = timedelta(days=2)
"""How far back a key's tasks are looked at when its open tasks are counted."""

TOUCH_EVERY = timedelta(seconds=30)
"""``last_used_at`` is written at most this often per key (a write per request would not scale)."""

_KEY_COLUMNS = (
    "id, name, access_key, api_key_hash, salt, scopes, unit, max_per_request_milli, models, "
    "concurrency, callback_hosts, expires_at, revoked_at, created_at, rotated_at, last_used_at"
)


@dataclass(frozen=True)
class KeyRecord:
    """A virtual key as the ledger holds it (no secret: see :mod:`kling_cost.proxy.keys`)."""

    id: int
    name: str
    access_key: str
    api_key_hash: str
    salt: str
    scopes: tuple[str, ...]
    """The scopes its creates reserve on, besides ``key:<name>`` and ``account``."""
    unit: str
    max_per_request: Decimal | None
    models: tuple[str, ...] | None
    """The models it may use (``None``: every model)."""
    concurrency: int | None
    callback_hosts: tuple[str, ...]
    """Callback hosts allowed although they resolve to a private or loopback address."""
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    rotated_at: datetime | None
    last_used_at: datetime | None

    @property
    def scope(self) -> str:
        """The key's own scope: its ``--budget`` is set there."""
        return f"key:{self.name}"

    @property
    def all_scopes(self) -> tuple[str, ...]:
        return (self.scope, *self.scopes)

    def state(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired``."""
        return key_state(self.revoked_at, self.expires_at, now)

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """What ``keys show --json`` prints (no hash, no salt)."""
        return {
            "name": self.name,
            "access_key": self.access_key,
            "state": self.state(now),
            "scopes": list(self.all_scopes),
            "unit": self.unit,
            "max_per_request": None if self.max_per_request is None else str(self.max_per_request),
            "models": None if self.models is None else list(self.models),
            "concurrency": self.concurrency,
            "callback_hosts": list(self.callback_hosts),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "created_at": _iso(self.created_at),
            "rotated_at": _iso(self.rotated_at),
            "last_used_at": _iso(self.last_used_at),
        }


@dataclass(frozen=True)
class OwnedTask:
    """A task sent through the proxy: its key, and where its client wants callbacks."""

    external_task_id: str
    key_id: int
    task_id: str | None
    endpoint: str
    callback_url: str | None
    created_at: datetime


def key_state(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> str:
    """``revoked`` (whatever its expiry), else ``expired`` from ``expires_at`` on, else ``active``."""
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and now >= expires_at:
        return "expired"
    return "active"


def refused_key(name: str, state: str) -> AuthError:
    """What a request with a revoked or expired key is answered, on every proxy process: Kling's
    1000 (authentication failed) for a revoked key, 1004 (authorization expired) for an expired
    one, with HTTP 401. The same codes whether the key is checked at authentication or when a
    create claims its task (a revocation between the two)."""
    if state == "revoked":
        return AuthError(f"key {name!r} was revoked", code=1000, http_status=401)
    return AuthError(f"key {name!r} expired", code=1004, http_status=401)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _opt_ms(value: Any) -> datetime | None:
    return None if value is None else from_ms(int(value))


def _key(row: Any) -> KeyRecord:
    return KeyRecord(
        id=int(row[0]),
        name=row[1],
        access_key=row[2],
        api_key_hash=row[3],
        salt=row[4],
        scopes=tuple(json.loads(row[5])),
        unit=row[6],
        max_per_request=None if row[7] is None else from_storage(int(row[7])),
        models=None if row[8] is None else tuple(json.loads(row[8])),
        concurrency=None if row[9] is None else int(row[9]),
        callback_hosts=tuple(json.loads(row[10] or "[]")),
        expires_at=_opt_ms(row[11]),
        revoked_at=_opt_ms(row[12]),
        created_at=from_ms(int(row[13])),
        rotated_at=_opt_ms(row[14]),
        last_used_at=_opt_ms(row[15]),
    )


def _owned(row: Any) -> OwnedTask:
    return OwnedTask(
        external_task_id=row[0],
        key_id=int(row[1]),
        task_id=row[2],
        endpoint=row[3],
        callback_url=row[4],
        created_at=from_ms(int(row[5])),
    )


_TASK_COLUMNS = "external_task_id, key_id, task_id, endpoint, callback_url, created_at"


class ProxyStore:
    """Virtual keys and task ownership, each call one transaction of the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # -- keys -----------------------------------------------------------------------------------

    def add_key(
        self,
        *,
        name: str,
        access_key: str,
        api_key_hash: str,
        salt: str,
        scopes: Sequence[str],
        unit: str,
        max_per_request: Decimal | None,
        models: Sequence[str] | None,
        concurrency: int | None,
        callback_hosts: Sequence[str],
        expires_in: timedelta | None = None,
        budgets: Sequence[BudgetRequest] = (),
    ) -> KeyRecord:
        """Record a new key, expiring ``expires_in`` after its creation (never: ``None``), and
        set ``budgets`` (checked requests for its scope), in one transaction: all or nothing.
        :class:`ValidationError` if ``name`` was ever used (a revoked key keeps its name, so its
        scope's history is never mixed with another key's)."""
        own = f"key:{name}"
        if any(b.scope != own for b in budgets):
            raise ValidationError(f"a key's budgets are set on its own scope {own}")

        def run() -> KeyRecord:
            with self.ledger.transaction() as cur:
                if self._by(cur, "name", name) is not None:
                    raise ValidationError(
                        f"a key named {name!r} exists (revoked keys keep their name); choose another name"
                    )
                cur.execute(
                    "INSERT INTO proxy_keys (name, access_key, api_key_hash, salt, scopes, unit, "
                    "max_per_request_milli, models, concurrency, callback_hosts, expires_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        access_key,
                        api_key_hash,
                        salt,
                        json.dumps(list(scopes)),
                        unit,
                        None if max_per_request is None else to_storage(max_per_request),
                        None if models is None else json.dumps(list(models)),
                        concurrency,
                        json.dumps(list(callback_hosts)),
                        None if expires_in is None else to_ms(cur.now + expires_in),
                        to_ms(cur.now),
                    ),
                )
                if budgets:
                    limits = Limits(self.ledger.backend, self.ledger.hooks, self.ledger.outbox.writer)
                    for wanted in budgets:
                        limits.set(cur, wanted)
                found = self._by(cur, "name", name)
            if found is None:  # pragma: no cover - written just above
                raise ValidationError(f"key {name!r} vanished")
            return found

        # a concurrent create of the same name loses on the unique name: run again, it is refused
        return retrying(run)

    @staticmethod
    def _by(cur: Cursor, column: str, value: object) -> KeyRecord | None:
        # column is one of a fixed set of names, never user input
        cur.execute(f"SELECT {_KEY_COLUMNS} FROM proxy_keys WHERE {column} = ?", (value,))
        row = cur.fetchone()
        return None if row is None else _key(row)

    def key(self, name: str) -> KeyRecord | None:
        with self.ledger.transaction(snapshot=True) as cur:
            return self._by(cur, "name", name)

    def key_by_access_key(self, access_key: str) -> KeyRecord | None:
        with self.ledger.transaction(snapshot=True) as cur:
            return self._by(cur, "access_key", access_key)

    def key_by_api_key_hash(self, digest: str) -> KeyRecord | None:
        with self.ledger.transaction(snapshot=True) as cur:
            return self._by(cur, "api_key_hash", digest)

    def key_by_id(self, key_id: int) -> KeyRecord | None:
        with self.ledger.transaction(snapshot=True) as cur:
            return self._by(cur, "id", key_id)

    def keys(self) -> list[KeyRecord]:
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(f"SELECT {_KEY_COLUMNS} FROM proxy_keys ORDER BY name")
            return [_key(row) for row in cur.fetchall()]

    def revoke(self, name: str) -> KeyRecord:
        """Revoke a key from the next request on; revoking twice keeps the first time."""

        def run() -> KeyRecord | None:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "UPDATE proxy_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                    (to_ms(cur.now), name),
                )
                return self._by(cur, "name", name)

        found = retrying(run)
        if found is None:
            raise ValidationError(f"no key named {name!r}; see kling-cost keys list")
        return found

    def rotate(self, name: str, *, access_key: str, api_key_hash: str, salt: str) -> KeyRecord:
        """Give an active key new credentials; the old ones stop working on the next request."""

        def run() -> KeyRecord:
            with self.ledger.transaction() as cur:
                found = self._by(cur, "name", name)
                if found is None:
                    raise ValidationError(f"no key named {name!r}; see kling-cost keys list")
                if found.state(cur.now) != "active":
                    raise ValidationError(f"key {name!r} is {found.state(cur.now)}: create a new key instead")
                cur.execute(
                    "UPDATE proxy_keys SET access_key = ?, api_key_hash = ?, salt = ?, rotated_at = ? "
                    "WHERE id = ? AND revoked_at IS NULL",
                    (access_key, api_key_hash, salt, to_ms(cur.now), found.id),
                )
                rotated = self._by(cur, "id", found.id)
            if rotated is None:  # pragma: no cover - updated just above
                raise ValidationError(f"key {name!r} vanished")
            return rotated

        return retrying(run)

    def touch(self, key: KeyRecord, now: datetime) -> None:
        """Note that ``key`` was used (at most every :data:`TOUCH_EVERY`)."""
        if key.last_used_at is not None and now - key.last_used_at < TOUCH_EVERY:
            return

        def run() -> None:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "UPDATE proxy_keys SET last_used_at = ? WHERE id = ? "
                    "AND (last_used_at IS NULL OR last_used_at < ?)",
                    (to_ms(cur.now), key.id, to_ms(cur.now - TOUCH_EVERY)),
                )

        retrying(run)

    # -- tasks ----------------------------------------------------------------------------------

    def claim_task(
        self, key: KeyRecord, external_task_id: str, endpoint: str, callback_url: str | None
    ) -> bool:
        """Claim ``external_task_id`` for ``key`` before its create is reserved and sent.

        Returns False when the key already owns it (a retry: the guard finds the earlier
        request; one whose earlier attempt ended without a task counts against the concurrency
        again and takes this request's endpoint and callback URL). Raises :class:`InvalidRequest`
        (1201) when another key owns it, and
        :class:`ConcurrencyLimited` (1303) when the key already has ``concurrency`` tasks open:
        counted under the key's row lock, so concurrent creates on any process never exceed it.
        """

        def run() -> bool:
            with self.ledger.transaction() as cur:
                # the key's row, locked: concurrent claims of one key take turns from here on
                cur.execute(
                    "SELECT revoked_at, expires_at FROM proxy_keys WHERE id = ?"
                    + self.ledger.backend.lock_budgets(True),
                    (key.id,),
                )
                row = cur.fetchone()
                if row is None:
                    raise refused_key(key.name, "revoked")
                state = key_state(_opt_ms(row[0]), _opt_ms(row[1]), cur.now)
                if state != "active":
                    raise refused_key(key.name, state)
                cur.execute(
                    f"SELECT {_TASK_COLUMNS} FROM proxy_tasks WHERE external_task_id = ?",
                    (external_task_id,),
                )
                owned = cur.fetchone()
                now_ms = to_ms(cur.now)
                if owned is not None:
                    if int(owned[1]) != key.id:
                        raise InvalidRequest(
                            f"external_task_id {external_task_id!r} is already in use; choose another",
                            code=1201,
                            http_status=400,
                        )
                    if self._starts_anew(cur, _owned(owned)):
                        # its earlier attempt never started a task: this one may, so it counts,
                        # and it is this request's endpoint Kling will know the task under
                        if key.concurrency is not None:
                            self._check_concurrency(cur, key, external_task_id)
                        cur.execute(
                            "UPDATE proxy_tasks SET endpoint = ?, callback_url = ?, created_at = ?, "
                            "updated_at = ? WHERE external_task_id = ?",
                            (endpoint, callback_url, now_ms, now_ms, external_task_id),
                        )
                    return False
                if key.concurrency is not None:
                    self._check_concurrency(cur, key, external_task_id)
                cur.execute(
                    "INSERT INTO proxy_tasks (external_task_id, key_id, endpoint, callback_url, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (external_task_id, key.id, endpoint, callback_url, now_ms, now_ms),
                )
                return True

        return retrying(run)

    @classmethod
    def _check_concurrency(cls, cur: Cursor, key: KeyRecord, external_task_id: str) -> None:
        open_now = cls._open_count(cur, key.id, external_task_id)
        if key.concurrency is not None and open_now >= key.concurrency:
            raise ConcurrencyLimited(
                f"key {key.name!r} has {open_now} tasks running, its limit is "
                f"{key.concurrency}; retry when one ends",
                code=1303,
                http_status=429,
            )

    @staticmethod
    def _starts_anew(cur: Cursor, owned: OwnedTask) -> bool:
        """Whether sending a claimed ``external_task_id`` again may start a new task at Kling:
        its reservation ended without a task (Kling refused it, or its lease lapsed), or it has
        none and its claim belongs to an attempt that died before reserving."""
        cur.execute(
            "SELECT status, task_id FROM reservations WHERE idempotency_key = ?", (owned.external_task_id,)
        )
        row = cur.fetchone()
        if row is None:
            return owned.created_at <= cur.now - CLAIM_GRACE
        return row[1] is None and row[0] in ("released", "expired")

    @staticmethod
    def _open_count(cur: Cursor, key_id: int, excluding: str | None = None) -> int:
        """Tasks of ``key_id`` holding a reservation, and claims of the last :data:`CLAIM_GRACE`
        whose reservation is not written yet (or is an earlier attempt's that ended without a
        task: a retry on its way)."""
        now = cur.now
        cur.execute(
            "SELECT COUNT(*) FROM proxy_tasks t LEFT JOIN reservations r "
            "ON r.idempotency_key = t.external_task_id "
            "WHERE t.key_id = ? AND t.created_at > ? AND t.external_task_id <> ? "
            "AND (r.status = 'reserved' OR (t.created_at > ? AND (r.id IS NULL OR "
            "(r.task_id IS NULL AND r.status IN ('released', 'expired') AND r.created_at < t.created_at))))",
            (key_id, to_ms(now - OPEN_LOOKBACK), excluding or "", to_ms(now - CLAIM_GRACE)),
        )
        return int(cur.fetchone()[0])

    def open_count(self, key: KeyRecord) -> int:
        """Tasks of ``key`` holding a reservation (or claimed a moment ago)."""
        with self.ledger.transaction(snapshot=True) as cur:
            return self._open_count(cur, key.id)

    def unclaim(self, key: KeyRecord, external_task_id: str) -> None:
        """Forget a claim whose create was refused before anything was sent."""

        def run() -> None:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "DELETE FROM proxy_tasks WHERE external_task_id = ? AND key_id = ? AND task_id IS NULL",
                    (external_task_id, key.id),
                )

        retrying(run)

    def attach(self, external_task_id: str, task_id: str) -> None:
        """Note the task id Kling gave a claimed create."""

        def run() -> None:
            with self.ledger.transaction() as cur:
                cur.execute(
                    "UPDATE proxy_tasks SET task_id = ?, updated_at = ? WHERE external_task_id = ? "
                    "AND task_id IS NULL",
                    (task_id, to_ms(cur.now), external_task_id),
                )

        retrying(run)

    def owner(self, *, task_id: str | None = None, external_task_id: str | None = None) -> OwnedTask | None:
        """The proxy task with this task id, else this external id; None if the proxy never sent it."""
        with self.ledger.transaction(snapshot=True) as cur:
            for column, value in (("task_id", task_id), ("external_task_id", external_task_id)):
                if value is None or bad_text(value) is not None:
                    continue  # no stored id has NUL or a lone surrogate (the ledger cannot hold one)
                cur.execute(f"SELECT {_TASK_COLUMNS} FROM proxy_tasks WHERE {column} = ?", (value,))
                row = cur.fetchone()
                if row is not None:
                    return _owned(row)
        return None

    def owned_by(self, key: KeyRecord, task_ids: Sequence[str], external_ids: Sequence[str] = ()) -> set[str]:
        """Which of ``task_ids`` / ``external_ids`` belong to ``key`` (one query per 500)."""
        found: set[str] = set()
        task_ids = [v for v in task_ids if bad_text(v) is None]
        external_ids = [v for v in external_ids if bad_text(v) is None]
        with self.ledger.transaction(snapshot=True) as cur:
            for column, values in (("task_id", list(task_ids)), ("external_task_id", list(external_ids))):
                for start in range(0, len(values), 500):
                    chunk = values[start : start + 500]
                    marks = ", ".join("?" for _ in chunk)
                    cur.execute(
                        f"SELECT {column} FROM proxy_tasks WHERE key_id = ? AND {column} IN ({marks})",
                        (key.id, *chunk),
                    )
                    found.update(str(row[0]) for row in cur.fetchall())
        return found

    def open_tasks(self, lookback: timedelta = OPEN_LOOKBACK) -> list[OwnedTask]:
        """Proxy tasks whose reservation is held or lapsed unsettled (what the settler polls),
        oldest first."""
        with self.ledger.transaction(snapshot=True) as cur:
            cur.execute(
                f"SELECT {', '.join('t.' + c for c in _TASK_COLUMNS.split(', '))} FROM proxy_tasks t "
                "JOIN reservations r ON r.idempotency_key = t.external_task_id "
                "WHERE t.created_at > ? AND r.status IN ('reserved', 'expired') ORDER BY t.created_at",
                (to_ms(cur.now - lookback),),
            )
            return [_owned(row) for row in cur.fetchall()]
