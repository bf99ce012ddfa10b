"""The bill side: what Kling charged and holds, set beside what the ledger recorded.

Three parts, one concern each:

* ``packs.py``: resource packs from ``/account/costs`` (a window wide enough for every pack
  still valid, at most one call per second across processes, the 12 h lag said aloud), their
  USD value, days left and the units that will expire unused at the current burn rate; the
  snapshot kept in the ledger (``bill_meta``) for the dashboard and the forecasts; and
  ``pack_budgets.py``, ``lifetime`` budgets kept equal to what the online packs hold
  (``kling-cost budget set account --from-packs video``, refreshed by ``packs --refresh``).
* ``reconcile.py``: the ledger's charges joined with Kling's per-task bill
  (``/account/billing/package`` and ``/balance``) by task id; runs stored in the ledger.
* ``forecast.py``: each budget's projected use at the end of its window and when it runs out;
  the ``forecast`` and ``pack-expiry`` alerts.

The state they keep lives in the ledger (migration 10: ``bill_runs``, ``bill_differences``,
``bill_meta``), so every process and machine sharing it sees the same.
"""

__all__: list[str] = []
