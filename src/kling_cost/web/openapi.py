"""The OpenAPI 3.1 description of the dashboard's read-only JSON API (``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_spec"]

_DAYS = {
    "name": "days",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1},
    "description": "Days back, today included.",
}
_TZ = {
    "name": "tz",
    "in": "query",
    "schema": {"type": "string"},
    "description": "IANA time zone (default: the dashboard's).",
}
_SCOPE = {
    "name": "scope",
    "in": "query",
    "schema": {"type": "string"},
    "description": "A scope such as project:film.",
}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}

_ENDPOINTS: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "/api/overview",
        "Every budget's gauge, daily usage against the daily limit, period totals (one per unit).",
        [_DAYS, _TZ],
    ),
    (
        "/api/glance",
        "At a glance: today's spend so far against all of yesterday (local days of `tz`, one entry "
        "per unit), the 5 costliest prompts of the last `days` days (grouped by prompt hash, per "
        "unit, costliest first) and the budget closest to its limit ((used + reserved) / limit).",
        [_DAYS, _TZ],
    ),
    (
        "/api/budgets",
        "Every budget in its current window: unit, limit, used, reserved, remaining, marks.",
        [_TZ],
    ),
    (
        "/api/daily",
        "Usage per local day and unit of one scope (default account), and its daily limit and unit.",
        [_DAYS, _TZ, _SCOPE],
    ),
    (
        "/api/report",
        "A grouped report, as `kling-cost report --format json`: rows per group and unit, totals per unit.",
        [
            {"name": "by", "in": "query", "schema": {"type": "string"}, "description": "e.g. day,model"},
            {
                "name": "since",
                "in": "query",
                "schema": {"type": "string"},
                "description": "30d, YYYY-MM-DD or ISO",
            },
            {"name": "until", "in": "query", "schema": {"type": "string"}},
            _SCOPE,
            _TZ,
        ],
    ),
    (
        "/api/breakdown/{dim}",
        "Usage of the last days grouped by one dimension (model, mode, project, key, user, ...).",
        [{"name": "dim", "in": "path", "required": True, "schema": {"type": "string"}}, _DAYS, _TZ],
    ),
    ("/api/drift", "Estimate against actual by model and mode.", [_DAYS, _TZ]),
    ("/api/charges", "The latest charges, newest first.", [_LIMIT, _SCOPE]),
    (
        "/api/alerts",
        "Alerts from the outbox (pending, delivered, cleared), newest first.",
        [
            {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "delivered"]}},
            _SCOPE,
            _LIMIT,
        ],
    ),
    (
        "/api/keys",
        "The proxy's virtual keys, by name: state, scopes, spend (all time per unit; this window "
        "in each budget), each budget of `key:<name>` in its current window with what it has left, "
        "the least left among every budget its creates reserve on, open tasks, last use. No secret.",
        [],
    ),
    (
        "/api/bill",
        "The bill: each budget's projection to the end of its window (with the points of the line "
        "drawn on the daily chart), the resource packs of the last stored snapshot (`kling-cost "
        "packs`) with their expiry and the units at risk, and the last reconciliation with Kling's "
        "bill (`kling-cost reconcile`) with its first 50 differences. Instants as ISO 8601 and as "
        "wall times of `tz` (`*_local`).",
        [_TZ],
    ),
    ("/api/openapi.json", "This description.", []),
]


_AMOUNT = {"type": "string", "description": "Exact decimal, three decimals (e.g. 12.500)"}
_GLANCE = {
    "type": "object",
    "properties": {
        "generated_at": {"type": "string", "format": "date-time"},
        "tz": {"type": "string"},
        "days": {"type": "integer"},
        "today": {"type": "string", "format": "date"},
        "yesterday": {"type": "string", "format": "date"},
        "spend": {
            "type": "array",
            "description": "One entry per unit (of today's and yesterday's charges and of the budgets).",
            "items": {
                "type": "object",
                "properties": {
                    "unit": {"type": "string", "enum": ["units", "credits"]},
                    "today": _AMOUNT,
                    "yesterday": _AMOUNT,
                    "change": {**_AMOUNT, "description": "today - yesterday (negative: less so far)"},
                    "change_pct": {
                        "type": ["string", "null"],
                        "description": "change as % of yesterday, one decimal; null when yesterday was 0",
                    },
                    "today_charges": {"type": "integer"},
                    "yesterday_charges": {"type": "integer"},
                },
            },
        },
        "top_prompts": {
            "type": "array",
            "description": "Up to 5 per unit, costliest first; prompts that cost nothing are left out.",
            "items": {
                "type": "object",
                "properties": {
                    "prompt_hash": {"type": "string", "description": "SHA-256 of the prompt"},
                    "prompt_preview": {"type": ["string", "null"]},
                    "unit": {"type": "string", "enum": ["units", "credits"]},
                    "actual": _AMOUNT,
                    "charges": {"type": "integer", "description": "charges that carried the prompt"},
                    "models": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "closest_budget": {
            "type": ["object", "null"],
            "description": "As an entry of /api/budgets (unit, limit, used, reserved, remaining, "
            "percent of the limit used or reserved); null without a budget.",
        },
    },
}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_KEYS = {
    "type": "object",
    "properties": {
        "generated_at": {"type": "string", "format": "date-time"},
        "keys": {
            "type": "array",
            "description": "One entry per virtual key, by name (revoked and expired keys included).",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "scope": {"type": "string", "description": "key:<name>, where its own budgets are set"},
                    "state": {"type": "string", "enum": ["active", "revoked", "expired"]},
                    "scopes": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "What its creates reserve on (key:<name> first), besides account.",
                    },
                    "unit": {"type": "string", "enum": ["units", "credits"]},
                    "concurrency": {"type": ["integer", "null"], "description": "Most open tasks at once"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": _TIME,
                    "revoked_at": _TIME,
                    "last_used_at": {**_TIME, "description": "Last request (written at most every 30 s)"},
                    "spend": {
                        "type": "array",
                        "description": "Charges carrying key:<name>, all time: one entry per unit, the "
                        "key's own unit first (0 when nothing was charged).",
                        "items": {
                            "type": "object",
                            "properties": {
                                "unit": {"type": "string", "enum": ["units", "credits"]},
                                "all_time": _AMOUNT,
                                "charges": {"type": "integer"},
                            },
                        },
                    },
                    "budgets": {
                        "type": "array",
                        "description": "Each budget of key:<name> (day, week, month, lifetime) in its "
                        "current window, as an entry of /api/budgets: window, window_key, start, end, tz, "
                        "unit, limit, used (spent in this window), reserved, remaining, percent.",
                        "items": {"type": "object"},
                    },
                    "headroom": {
                        "type": ["object", "null"],
                        "description": "The budget in the key's unit with the least left among every "
                        "budget its creates reserve on (its own, its scopes', account's): remaining, "
                        "unit, scope, window, window_key, tz; null when none has a budget.",
                    },
                    "open_tasks": {"type": "integer", "description": "Tasks holding a reservation"},
                },
            },
        },
    },
}
_LOCAL = {"type": ["string", "null"], "description": "Wall time in `tz`, no offset (for charts)"}
_POINT = {
    "type": "object",
    "properties": {"at": {"type": "string", "format": "date-time"}, "local": _LOCAL, "value": _AMOUNT},
}
_BILL = {
    "type": "object",
    "properties": {
        "generated_at": {"type": "string", "format": "date-time"},
        "now_local": _LOCAL,
        "tz": {"type": "string"},
        "forecast": {
            "type": "object",
            "properties": {
                "rule": {"type": "string", "description": "How a projection is made, and when"},
                "projections": {
                    "type": "array",
                    "description": "One per budget, in its current window.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "budget_id": {"type": "integer"},
                            "scope": {"type": "string"},
                            "window": {"type": "string", "enum": ["day", "week", "month", "lifetime"]},
                            "window_key": {"type": "string"},
                            "unit": {"type": "string", "enum": ["units", "credits"]},
                            "limit": _AMOUNT,
                            "used": _AMOUNT,
                            "reserved": _AMOUNT,
                            "level": {**_AMOUNT, "description": "used + reserved now"},
                            "rate_per_hour": {"type": ["string", "null"]},
                            "projected": {
                                "type": ["string", "null"],
                                "description": "used + reserved at the horizon; null without enough data",
                            },
                            "horizon": {**_TIME, "description": "The window's end (lifetime: now + 7 days)"},
                            "runs_out_at": {**_TIME, "description": "When the limit is reached at this rate"},
                            "over": {"type": "boolean"},
                            "reason": {"type": ["string", "null"], "description": "Why no projection"},
                            "points": {
                                "type": "array",
                                "items": _POINT,
                                "description": "The projection's line: now, the run-out instant "
                                "(when before the horizon), the horizon; empty without a projection.",
                            },
                        },
                    },
                },
            },
        },
        "packs": {
            "type": ["object", "null"],
            "description": "The last stored snapshot (null before `kling-cost packs` ran).",
            "properties": {
                "taken_at": {"type": "string", "format": "date-time"},
                "note": {"type": "string", "description": "remaining_quantity can lag by up to 12 h"},
                "burn_per_day": {"type": "object", "additionalProperties": _AMOUNT},
                "packs": {
                    "type": "array",
                    "description": "Soonest expiry first.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "id": {"type": "string"},
                            "pack_type": {"type": "string", "enum": ["video", "image", "tryon", "unknown"]},
                            "status": {"type": "string"},
                            "total": _AMOUNT,
                            "remaining": _AMOUNT,
                            "effective_time": _TIME,
                            "invalid_time": _TIME,
                            "usd_left": {"type": ["string", "null"]},
                            "days_left": {"type": ["string", "null"]},
                            "units_at_risk": {**_AMOUNT, "description": "Unused at expiry at the burn rate"},
                            "charged_recently": {**_AMOUNT, "description": "Ledger units of the last 12 h"},
                            "start_local": _LOCAL,
                            "end_local": _LOCAL,
                            "span_ms": {"type": ["integer", "null"]},
                        },
                    },
                },
            },
        },
        "reconciliation": {
            "type": ["object", "null"],
            "description": "The last run (null before `kling-cost reconcile` ran): id, started_at, "
            "since, until, status (clean or differences), fixed, counts per category, summary (totals "
            "per pack type and day, source, problems), differences (first 50) and differences_total.",
        },
    },
}
_SCHEMAS = {"/api/glance": _GLANCE, "/api/keys": _KEYS, "/api/bill": _BILL}


def openapi_spec() -> dict[str, Any]:
    """Amounts are decimal strings (exact), times ISO 8601."""
    paths: dict[str, Any] = {}
    for path, summary, params in _ENDPOINTS:
        paths[path] = {
            "get": {
                "summary": summary,
                "parameters": params,
                "security": [{"bearer": []}, {"cookie": []}, {"query": []}],
                "responses": {
                    "200": {
                        "description": "JSON",
                        "content": {"application/json": {"schema": _SCHEMAS.get(path, {"type": "object"})}},
                    },
                    "400": {"description": 'Bad parameter: {"error": message}'},
                    "401": {"description": "Token required (non-loopback dashboard) or wrong"},
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kling-cost dashboard API",
            "version": "1",
            "description": (
                "Read-only. Amounts are exact decimal strings; every object holding amounts has a "
                "`unit` field (`units`: Kling's API units, `credits`: the app's credits) that they "
                "count. Amounts of different units are never added: reports have one row per group "
                "and unit and one entry of `totals` per unit."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "kling_cost_token"},
                "query": {"type": "apiKey", "in": "query", "name": "token"},
            }
        },
    }
