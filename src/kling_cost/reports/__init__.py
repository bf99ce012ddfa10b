"""Where the credits went: grouped reports, exports and the views behind the dashboard.

One module for the CLI (``kling-cost report|export``), the dashboard and its JSON API.
"""

from __future__ import annotations

from ._time import parse_since, parse_until
from .aggregate import DIMENSIONS, Report, ReportRow, parse_by, report
from .export import EXPORT_FIELDS, charge_record, export_charges
from .glance import DaySpend, Glance, closest_budget, glance
from .keys import key_rows, keys_view
from .views import DailyUsage, budget_status, daily_usage, latest_charges, overview

__all__ = [
    "DIMENSIONS",
    "EXPORT_FIELDS",
    "DailyUsage",
    "DaySpend",
    "Glance",
    "Report",
    "ReportRow",
    "budget_status",
    "charge_record",
    "closest_budget",
    "daily_usage",
    "export_charges",
    "glance",
    "key_rows",
    "keys_view",
    "latest_charges",
    "overview",
    "parse_by",
    "parse_since",
    "parse_until",
    "report",
]
