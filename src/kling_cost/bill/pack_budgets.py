"""Budgets kept equal to what the online resource packs hold, so the ledger refuses a task
before Kling answers 1102 ("resource pack used up").

``kling-cost budget set account --from-packs video`` keeps a ``lifetime`` budget (unit
``units``) on the scope with

    limit = used (committed, lifetime) + what the online packs of the type hold
            - what the ledger charged on that type in the last 12 h

so its remaining, ``limit - used - reserved``, is the packs' units less what running tasks
hold. Reservations are not added to the limit: Kling deducts a task when it ends, so its
figure does not show running tasks yet, and they must come out of the headroom. The last
12 h of charges are taken off because ``remaining_quantity`` can be that far behind
(conservative: the ledger may refuse a little early, never late). The budget counts every
charge on its scope: a scope that also pays other pack types refuses earlier until the next
refresh. Which budgets follow packs is kept in the ledger (``bill_meta``, ``packs.budgets``);
:func:`refresh_pack_budgets` (``kling-cost packs --refresh``) sets their limits again from a
fresh snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..money import exact
from ..pricing.catalog import PACKS

if TYPE_CHECKING:
    from ..budgets import Budget
    from ..ledger import Ledger
    from .packs import PackSnapshot

__all__ = ["BUDGETS_KEY", "PackBudget", "follow_packs", "pack_budgets", "refresh_pack_budgets"]

BUDGETS_KEY = "packs.budgets"


@dataclass(frozen=True)
class PackBudget:
    """A ``lifetime`` budget of ``scope`` that follows the online packs of ``pack_type``."""

    scope: str
    pack_type: str
    limit: Decimal
    used: Decimal
    packs_remaining: Decimal
    charged_recently: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "window": "lifetime",
            "pack_type": self.pack_type,
            "limit": str(self.limit),
            "used": str(self.used),
            "packs_remaining": str(self.packs_remaining),
            "charged_recently": str(self.charged_recently),
        }


def pack_budgets(ledger: Ledger) -> dict[str, str]:
    """Scope -> pack type of every budget that follows packs."""
    from ..ledger.bill_store import BillStore

    data = BillStore(ledger).get(BUDGETS_KEY)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


@exact
def follow_packs(ledger: Ledger, scope: str, pack_type: str, snapshot: PackSnapshot) -> PackBudget:
    """Set (or create) the ``lifetime`` budget of ``scope`` from ``snapshot`` and remember that
    it follows the packs of ``pack_type``."""
    from ..ledger.bill_store import BillStore

    if pack_type not in PACKS:
        raise ValidationError(f"--from-packs {pack_type!r}: use one of {', '.join(PACKS)}")
    existing = ledger.get_budget(scope, "lifetime")
    if existing is not None and existing.unit != "units":
        raise ValidationError(
            f"the lifetime budget of {scope} counts {existing.unit}; a budget from packs counts units "
            "(delete it first)"
        )
    used = Decimal("0.000") if existing is None else ledger.usage(scope, "lifetime").used
    held = snapshot.online_remaining(pack_type)
    recent = max((p.charged_recently for p in snapshot.of_type(pack_type)), default=Decimal("0.000"))
    limit = max(Decimal("0.000"), used + held - recent)
    budget: Budget = ledger.set_budget(scope, limit, "lifetime", unit="units")
    store = BillStore(ledger)
    follows = pack_budgets(ledger)
    follows[budget.scope] = pack_type
    store.set(BUDGETS_KEY, follows)
    return PackBudget(budget.scope, pack_type, budget.limit, used, held, recent)


def refresh_pack_budgets(ledger: Ledger, snapshot: PackSnapshot) -> list[PackBudget]:
    """Set every budget that follows packs again from ``snapshot``."""
    return [
        follow_packs(ledger, scope, pack_type, snapshot) for scope, pack_type in pack_budgets(ledger).items()
    ]
