"""The Kling-compatible budget proxy: any tool, in any language, spends only what its key allows.

``kling-cost proxy`` speaks Kling's API (both standards) in front of Kling: a client changes
only its base URL and key (a virtual key of :mod:`.keys`). Every create is priced, reserved on
the key's scopes and ``account``, sent with the real credentials and settled once, through the
guard (:mod:`kling_cost.guard`): the proxy is a face over the guard and the ledger, like the CLI.
"""

from __future__ import annotations

__all__: list[str] = []
