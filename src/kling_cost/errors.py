"""The errors raised by ``kling_cost``: one root, one tree.

::

    KlingCostError
     ├── ConfigurationError        bad settings: catalog file, ledger URL, sink URL, missing extra
     │    └── MissingCredentials   no (or half a) Kling key pair: missing names the variables to set
     ├── PricingError (ValueError)  a request the catalog cannot price (field, value, allowed)
     ├── ValidationError (ValueError)  an invalid amount, scope, window, time zone or argument
     │    ├── UnitMismatch          a request priced in one unit met a budget counting another
     │    └── IdempotencyConflict  an idempotency key reused for a different request (key, differences)
     ├── BudgetExceeded (RuntimeError)  a budget refused a reservation (scope, window, requested, available)
     ├── ReservationError          commit/release of a reservation in the wrong state, or unknown
     ├── StorageError              the ledger's database failed or is unreachable
     │    └── LedgerClosed         an operation on a ledger after close()
     ├── SinkError                 an alert sink could not deliver (the receiver failed or is unreachable)
     ├── ClientClosed (RuntimeError)  a Kling client (or a guard) used after close(): nothing was sent
     ├── TaskTimeout               a Kling task did not end in time (keeps the task id)
     └── KlingAPIError             an error answer from Kling (code, message, request_id)
          ├── AuthError            1000-1004
          ├── AccountError         1100, 1101, 1304
          ├── InsufficientBalance  1102
          ├── PermissionDenied     1103
          ├── InvalidRequest       1200-1203
          ├── ContentRejected      1300-1301
          ├── RateLimited          1302
          ├── ConcurrencyLimited   1303
          └── ServerError          5000-5002, and transport failures
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

__all__ = [
    "AccountError",
    "AuthError",
    "BudgetExceeded",
    "ClientClosed",
    "ConcurrencyLimited",
    "ConfigurationError",
    "ContentRejected",
    "IdempotencyConflict",
    "InsufficientBalance",
    "InvalidRequest",
    "KlingAPIError",
    "KlingCostError",
    "LedgerClosed",
    "MissingCredentials",
    "PermissionDenied",
    "PricingError",
    "RateLimited",
    "ReservationError",
    "ServerError",
    "SinkError",
    "StorageError",
    "TaskTimeout",
    "UnitMismatch",
    "ValidationError",
]


class KlingCostError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigurationError(KlingCostError):
    """A setting is wrong: a catalog file, a ledger URL, a sink URL, a missing optional extra."""


class MissingCredentials(ConfigurationError):
    """No usable Kling credentials. ``missing`` names the environment variables whose absence
    is the problem: ``("KLING_ACCESS_KEY", "KLING_SECRET_KEY")`` when there are none (an API
    key in ``KLING_API_KEY`` would also do), or the half of the pair that was not given."""

    def __init__(self, message: str, *, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = tuple(missing)


class ValidationError(KlingCostError, ValueError):
    """An argument is invalid (amount, scope, window, time zone, ...). Nothing was changed."""


class UnitMismatch(ValidationError):
    """A reservation priced in ``request_unit`` touches a budget that counts ``budget_unit``.

    Refused before anything is held: amounts in different units are never added together.
    """

    def __init__(self, message: str, *, scope: str, window: str, budget_unit: str, request_unit: str) -> None:
        super().__init__(message)
        self.scope = scope
        self.window = window
        self.budget_unit = budget_unit
        self.request_unit = request_unit


class IdempotencyConflict(ValidationError):
    """An idempotency key already names a different request. Nothing was held or charged.

    ``differences`` lists what differs as ``(field, first, this)``: the value the key was first
    used with, then the one asked for now (``("amount", "20", "5")``).
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        differences: Sequence[tuple[str, str, str]],
        reservation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.differences = tuple(differences)
        self.reservation_id = reservation_id

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the fields that differ (``("amount", "scopes")``)."""
        return tuple(name for name, _, _ in self.differences)


class PricingError(KlingCostError, ValueError):
    """The catalog cannot price a request: ``field`` has ``value``, and ``allowed`` lists what it offers."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: object = None,
        allowed: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = tuple(allowed)


class BudgetExceeded(KlingCostError, RuntimeError):
    """A budget refused a reservation. Nothing was reserved on any scope."""

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        window: str,
        requested: Decimal,
        available: Decimal,
        limit: Decimal | None = None,
        reason: str = "limit",
        unit: str = "units",
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.window = window
        self.requested = requested
        self.available = available
        self.limit = limit
        self.reason = reason  # "limit" or "max_per_request"
        self.unit = unit  # what requested, available and limit count: "units" or "credits"


class ReservationError(KlingCostError):
    """A reservation is unknown, or in a state that does not allow the operation."""


class StorageError(KlingCostError):
    """The ledger's database failed or could not be reached; the operation did not happen."""


class LedgerClosed(StorageError):
    """The ledger was closed (``close()``, or its ``with`` block ended); open it again to use it."""


class SinkError(KlingCostError):
    """An alert sink could not deliver a message (the receiver failed or is unreachable); the
    alert stays pending and is retried. Raised by the sinks of :mod:`kling_cost.alerts`."""


class ClientClosed(KlingCostError, RuntimeError):
    """A Kling client (or a guard over it) was used after ``close()``/``aclose()`` or after its
    ``with`` block: nothing was sent to Kling and nothing was held. Create a new client."""


class TaskTimeout(KlingCostError, TimeoutError):
    """A Kling task did not end in time. It may still finish and be billed: keep ``task_id``."""

    def __init__(self, message: str, *, task_id: str, last_status: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.last_status = last_status


class KlingAPIError(KlingCostError):
    """An error answer from the Kling API."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.http_status = http_status


class AuthError(KlingAPIError):
    """1000-1004: authentication failed, empty, invalid, not yet valid or expired."""


class AccountError(KlingAPIError):
    """1100, 1101, 1304: account exception, arrears, IP whitelist."""


class InsufficientBalance(KlingAPIError):
    """1102: the resource pack is used up or expired."""


class PermissionDenied(KlingAPIError):
    """1103: no permission for this API or model."""


class InvalidRequest(KlingAPIError):
    """1200-1203: invalid request, parameters, method, or resource not found."""


class ContentRejected(KlingAPIError):
    """1300-1301: platform policy or content safety."""


class RateLimited(KlingAPIError):
    """1302: requests too fast."""


class ConcurrencyLimited(KlingAPIError):
    """1303: parallel tasks over the resource pack's limit."""


class ServerError(KlingAPIError):
    """5000-5002 (internal error, maintenance, timeout) and transport failures."""

    unsent = False
    """True when no attempt of the call reached Kling (every one failed to connect): it surely
    did nothing there."""
