"""klingai-cost-controls: never spend more on Kling AI than you meant to.

Every public name is imported on first use (PEP 562 ``__getattr__``), so ``import kling_cost``
and the ``kling-cost`` command start fast: the HTTP client, the pydantic wire models, the
ledger's drivers and the servers load only when something asks for them.
``from kling_cost import KlingClient`` works as with eager imports.
"""

import importlib as _importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a third of this import's time)
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from .advisor import Advice, advise
    from .alerts import (
        AlertMessage,
        AlertsConfig,
        AlertSink,
        Backoff,
        CallbackSink,
        Deliverer,
        load_config,
        sink_from_url,
    )
    from .batch import BatchPlan, BatchRunner, plan_batch, read_batch
    from .budgets import Budget, Usage, Window
    from .cache import CachePolicy, fingerprint
    from .compat import BudgetGuard, CostAwareKlingClient, UsageTracker, pre_batch_check
    from .errors import (
        AccountError,
        AuthError,
        BudgetExceeded,
        ClientClosed,
        ConcurrencyLimited,
        ConfigurationError,
        ContentRejected,
        IdempotencyConflict,
        InsufficientBalance,
        InvalidRequest,
        KlingAPIError,
        KlingCostError,
        LedgerClosed,
        MissingCredentials,
        PermissionDenied,
        PricingError,
        RateLimited,
        ReservationError,
        ServerError,
        SinkError,
        StorageError,
        TaskTimeout,
        UnitMismatch,
        ValidationError,
    )
    from .guard import AsyncCostAwareClient, CostAwareClient, SettleReport
    from .kling import AccountCosts, AsyncKlingClient, KlingClient, KlingTask, NewStandardTask, RetryPolicy
    from .ledger import AlertRecord, Charge, Ledger, Reservation, default_ledger_url, open_ledger
    from .money import format_amount, parse_amount
    from .pricing import Catalog, Estimate, PriceEntry, PriceRequest, estimate, load_catalog, parse_catalog
    from .reports import Report, ReportRow, export_charges, report

__version__ = "0.1.0"

__all__ = [
    "AccountCosts",
    "AccountError",
    "Advice",
    "AlertMessage",
    "AlertRecord",
    "AlertSink",
    "AlertsConfig",
    "AsyncCostAwareClient",
    "AsyncKlingClient",
    "AuthError",
    "Backoff",
    "BatchPlan",
    "BatchRunner",
    "Budget",
    "BudgetExceeded",
    "BudgetGuard",
    "CachePolicy",
    "CallbackSink",
    "Catalog",
    "Charge",
    "ClientClosed",
    "ConcurrencyLimited",
    "ConfigurationError",
    "ContentRejected",
    "CostAwareClient",
    "CostAwareKlingClient",
    "Deliverer",
    "Estimate",
    "IdempotencyConflict",
    "InsufficientBalance",
    "InvalidRequest",
    "KlingAPIError",
    "KlingClient",
    "KlingCostError",
    "KlingTask",
    "Ledger",
    "LedgerClosed",
    "MissingCredentials",
    "NewStandardTask",
    "PermissionDenied",
    "PriceEntry",
    "PriceRequest",
    "PricingError",
    "RateLimited",
    "Report",
    "ReportRow",
    "Reservation",
    "ReservationError",
    "RetryPolicy",
    "ServerError",
    "SettleReport",
    "SinkError",
    "StorageError",
    "TaskTimeout",
    "UnitMismatch",
    "Usage",
    "UsageTracker",
    "ValidationError",
    "Window",
    "__version__",
    "advise",
    "default_ledger_url",
    "estimate",
    "export_charges",
    "fingerprint",
    "format_amount",
    "load_catalog",
    "load_config",
    "open_ledger",
    "parse_amount",
    "parse_catalog",
    "plan_batch",
    "pre_batch_check",
    "read_batch",
    "report",
    "sink_from_url",
]

# Which submodule defines each public name (kept in step with the imports above by a test).
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "advisor": ("Advice", "advise"),
    "alerts": (
        "AlertMessage",
        "AlertSink",
        "AlertsConfig",
        "Backoff",
        "CallbackSink",
        "Deliverer",
        "load_config",
        "sink_from_url",
    ),
    "batch": ("BatchPlan", "BatchRunner", "plan_batch", "read_batch"),
    "budgets": ("Budget", "Usage", "Window"),
    "cache": ("CachePolicy", "fingerprint"),
    "compat": ("BudgetGuard", "CostAwareKlingClient", "UsageTracker", "pre_batch_check"),
    "errors": (
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
    ),
    "guard": ("AsyncCostAwareClient", "CostAwareClient", "SettleReport"),
    "kling": (
        "AccountCosts",
        "AsyncKlingClient",
        "KlingClient",
        "KlingTask",
        "NewStandardTask",
        "RetryPolicy",
    ),
    "ledger": ("AlertRecord", "Charge", "Ledger", "Reservation", "default_ledger_url", "open_ledger"),
    "money": ("format_amount", "parse_amount"),
    "pricing": (
        "Catalog",
        "Estimate",
        "PriceEntry",
        "PriceRequest",
        "estimate",
        "load_catalog",
        "parse_catalog",
    ),
    "reports": ("Report", "ReportRow", "export_charges", "report"),
}
_SOURCE: dict[str, str] = {name: module for module, names in _SUBMODULES.items() for name in names}


if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt name stays an error

    def __getattr__(name: str) -> object:
        module = _SOURCE.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later look-ups find it without calling this function
        return value


def __dir__() -> list[str]:
    """The public names, and the submodules imported so far."""
    modules = [n for n, v in globals().items() if isinstance(v, type(_importlib)) and not n.startswith("_")]
    return sorted({*__all__, *modules, "__doc__", "__file__", "__name__", "__path__"})
