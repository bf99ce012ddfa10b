"""The proxy's virtual keys as the dashboard shows them (``/api/keys``): for each key its state,
scopes, spend (all time, and in each budget's current window), what its budgets have left,
its open tasks and when it was last used. No secret: the ledger holds none (see
:mod:`kling_cost.proxy.keys`), and neither hashes nor access keys are shown."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from ..budgets import WINDOWS, Usage
from ..ledger import Ledger
from ..ledger.proxy_store import KeyRecord
from ..money import exact
from .aggregate import report, sort_units
from .views import budget_status

__all__ = ["key_rows", "keys_view"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@exact
def _headroom(key: KeyRecord, usages: list[Usage]) -> dict[str, Any] | None:
    """The budget in the key's unit, among every budget its creates reserve on (its own, its
    scopes', ``account``'s), with the least left; None when none of them has a budget."""
    reach = {*key.all_scopes, "account"}
    best: Usage | None = None
    for u in usages:
        if u.scope in reach and u.unit == key.unit and (best is None or u.remaining < best.remaining):
            best = u
    if best is None:
        return None
    return {
        "remaining": str(best.remaining),
        "unit": best.unit,
        "scope": best.scope,
        "window": best.budget.window,
        "window_key": best.window.key,
        "tz": best.budget.tz,
    }


def _own_budgets(key: KeyRecord, usages: list[Usage]) -> list[Usage]:
    """The budgets of ``key:<name>``, day, week, month, then lifetime."""
    mine = [u for u in usages if u.scope == key.scope]
    return sorted(mine, key=lambda u: WINDOWS.index(u.budget.window))


def key_rows(ledger: Ledger, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every virtual key of ``ledger`` at ``now`` (default: the ledger's clock), by name,
    JSON-ready (amounts as exact decimal strings, each with its ``unit``):

    * ``name``, ``scope`` (``key:<name>``, where its own budgets are set), ``state``
      (``active``, ``revoked``, ``expired``), ``scopes`` (what its creates reserve on, besides
      ``account``), ``unit``, ``concurrency``, ``created_at``, ``expires_at``, ``revoked_at``,
      ``last_used_at`` (ISO 8601 or null);
    * ``spend``: one entry per unit (the key's own unit always, first), ``all_time`` (what
      the charges carrying ``key:<name>`` cost) and ``charges`` (how many);
    * ``budgets``: each budget of ``key:<name>`` in its current window, as in
      ``/api/budgets`` (``window``, ``window_key``, ``tz``, ``unit``, ``limit``, ``used``:
      spent in this window, ``reserved``, ``remaining``, ``percent``, ...);
    * ``headroom``: the budget in the key's unit with the least left among all those its
      creates reserve on (its own, its scopes', ``account``'s), or null;
    * ``open_tasks``: its tasks holding a reservation (or claimed a moment ago).
    """
    keys = ledger.proxy.keys()
    if not keys:
        return []
    moment = now or ledger.clock()
    usages = ledger.usages(at=moment)
    spent = report(ledger, ("key",), since=None, now=moment)
    rows = []
    for key in keys:
        own = [r for r in spent.rows if r.key.get("key") == key.scope]
        by_unit = {r.unit: r for r in own}
        units = [key.unit, *(u for u in sort_units(by_unit) if u != key.unit)]
        rows.append(
            {
                "name": key.name,
                "scope": key.scope,
                "state": key.state(moment),
                "scopes": list(key.all_scopes),
                "unit": key.unit,
                "concurrency": key.concurrency,
                "created_at": _iso(key.created_at),
                "expires_at": _iso(key.expires_at),
                "revoked_at": _iso(key.revoked_at),
                "last_used_at": _iso(key.last_used_at),
                "spend": [
                    {
                        "unit": u,
                        "all_time": str(by_unit[u].actual if u in by_unit else Decimal("0.000")),
                        "charges": by_unit[u].charges if u in by_unit else 0,
                    }
                    for u in units
                ],
                "budgets": [budget_status(u) for u in _own_budgets(key, usages)],
                "headroom": _headroom(key, usages),
                "open_tasks": ledger.proxy.open_count(key),
            }
        )
    return rows


def keys_view(ledger: Ledger, *, now: datetime | None = None) -> dict[str, Any]:
    """What ``/api/keys`` returns: ``generated_at`` and :func:`key_rows`."""
    moment = now or ledger.clock()
    return {"generated_at": moment.isoformat(), "keys": key_rows(ledger, now=moment)}
