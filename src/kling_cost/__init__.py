"""klingai-cost-controls: never spend more on Kling AI than you meant to."""

from .advisor import Advice, advise
from .batch import BatchPlan, BatchRunner, plan_batch, read_batch
from .budgets import Budget, Usage, Window
from .cache import CachePolicy, fingerprint
from .compat import BudgetGuard, CostAwareKlingClient, UsageTracker, pre_batch_check
from .errors import (
    AccountError,
    AuthError,
    BudgetExceeded,
    ConcurrencyLimited,
    ConfigurationError,
    ContentRejected,
    InsufficientBalance,
    InvalidRequest,
    KlingAPIError,
    KlingCostError,
    PermissionDenied,
    PricingError,
    RateLimited,
    ReservationError,
    ServerError,
    StorageError,
    TaskTimeout,
    ValidationError,
)
from .guard import AsyncCostAwareClient, CostAwareClient, SettleReport
from .kling import AccountCosts, AsyncKlingClient, KlingClient, KlingTask, RetryPolicy
from .ledger import Charge, Ledger, Reservation, default_ledger_url, open_ledger
from .money import format_amount, from_storage, parse_amount, to_storage
from .pricing import (
    Catalog,
    Estimate,
    PriceEntry,
    PriceRequest,
    estimate,
    load_catalog,
    parse_catalog,
)
from .reports import Report, ReportRow, export_charges, report

__version__ = "0.1.0"

__all__ = [
    "AccountCosts",
    "AccountError",
    "Advice",
    "AsyncCostAwareClient",
    "AsyncKlingClient",
    "AuthError",
    "BatchPlan",
    "BatchRunner",
    "Budget",
    "BudgetExceeded",
    "BudgetGuard",
    "CachePolicy",
    "Catalog",
    "Charge",
    "ConcurrencyLimited",
    "ConfigurationError",
    "ContentRejected",
    "CostAwareClient",
    "CostAwareKlingClient",
    "Estimate",
    "InsufficientBalance",
    "InvalidRequest",
    "KlingAPIError",
    "KlingClient",
    "KlingCostError",
    "KlingTask",
    "Ledger",
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
    "StorageError",
    "TaskTimeout",
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
    "from_storage",
    "load_catalog",
    "open_ledger",
    "parse_amount",
    "parse_catalog",
    "plan_batch",
    "pre_batch_check",
    "read_batch",
    "report",
    "to_storage",
]
