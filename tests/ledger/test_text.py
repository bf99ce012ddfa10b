"""Text PostgreSQL cannot store (NUL, lone surrogates) never makes a ledger operation fail:
what Kling charged is always recorded, identically on both backends."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from kling_cost import ValidationError
from kling_cost.ledger import Ledger

NUL_META = {
    "prompt": "a fox\x00 in snow",
    "model": "kling-v1\x00",
    "mode": "std\x00",
    "kind": "text2video\x00",
    "duration": 5,
    "k\x00ey": ["x\x00y", {"deep\x00": "z\x00"}],
}


def test_nul_metadata_never_fails_a_commit(ledger: Ledger) -> None:
    ledger.set_budget("project:a", 10)
    res = ledger.reserve(2, ["project:a"], metadata=NUL_META)
    res = ledger.attach_task(res, "task\x001", {"note\x00": "attached\x00"})
    done = ledger.commit(res, 1, task_id="task\x001", metadata={"kling\x00": "1\x00"})
    assert done.status == "committed"
    assert ledger.usage("project:a").used == 1
    [charge] = ledger.charges()
    assert (charge.model, charge.mode, charge.kind) == ("kling-v1\ufffd", "std\ufffd", "text2video\ufffd")
    assert charge.prompt_preview == "a fox\ufffd in snow" and charge.task_id == "task\ufffd1"
    assert charge.metadata["k\ufffdey"] == ["x\ufffdy", {"deep\ufffd": "z\ufffd"}]
    assert charge.metadata["note\ufffd"] == "attached\ufffd" and charge.metadata["kling\ufffd"] == "1\ufffd"
    assert "\x00" not in json.dumps(charge.to_dict(), ensure_ascii=False)
    assert ledger.reservation_for_task("task\ufffd1") is not None


def test_lone_surrogates_never_fail_a_commit(ledger: Ledger) -> None:
    res = ledger.reserve(1, ["project:a"], metadata={"prompt": "bad \ud800 text", "model": "m\udfff"})
    ledger.commit(res)
    [charge] = ledger.charges()
    assert charge.prompt_preview == "bad \ufffd text" and charge.model == "m\ufffd"
    assert charge.prompt_hash is not None and len(charge.prompt_hash) == 64


def test_direct_charge_and_cache_hit_with_nul_are_recorded(ledger: Ledger) -> None:
    ledger.set_budget("project:a", 10)
    ledger.charge("1.5", ["project:a"], task_id="t\x00", metadata=NUL_META)
    assert ledger.record_cache_hit(
        "1.5", ["project:a"], idempotency_key="hit-1", task_id="t\x00", metadata=NUL_META
    )
    charges = ledger.charges()
    assert [c.status for c in charges] == ["succeeded", "cache_hit"]
    assert {c.model for c in charges} == {"kling-v1\ufffd"} and {c.task_id for c in charges} == {"t\ufffd"}
    assert ledger.usage("project:a").used == Decimal("1.5")


def test_a_reservation_stored_with_nul_before_the_fix_still_commits(ledger: Ledger) -> None:
    """Rows written by earlier versions carry NUL inside their JSON metadata; Kling's charge
    for them must still count."""
    ledger.set_budget("project:a", 10)
    res = ledger.reserve(3, ["project:a"], metadata={"model": "clean"})
    with ledger.transaction() as cur:
        cur.execute(
            "UPDATE reservations SET metadata = ? WHERE id = ?",
            (json.dumps({"model": "kling-v1\x00", "prompt_preview": "p\x00"}), res.id),
        )
    ledger.commit(res.id, 2, task_id="t-1")
    [charge] = ledger.charges()
    assert (charge.model, charge.prompt_preview, charge.actual) == ("kling-v1\ufffd", "p\ufffd", 2)
    assert ledger.usage("project:a").used == 2


@pytest.mark.parametrize("key", ["job\x00-1", "job-\ud800"])
def test_an_idempotency_key_that_cannot_be_stored_is_refused(ledger: Ledger, key: str) -> None:
    with pytest.raises(ValidationError, match="idempotency_key"):
        ledger.reserve(1, ["project:a"], idempotency_key=key)
    assert ledger.reservations() == [] and ledger.charges() == []


@pytest.mark.parametrize("catalog", ["kling\x00api", "kling-\udc80"])
def test_a_catalog_name_that_cannot_be_stored_is_refused_alike(ledger: Ledger, catalog: str) -> None:
    """Before: SQLite stored a NUL catalog name that PostgreSQL refused (a StorageError), and a
    lone surrogate raised a raw UnicodeEncodeError on both."""
    ledger.set_budget("account", 10)
    for call in (ledger.reserve, ledger.charge):
        with pytest.raises(ValidationError, match="catalog"):
            call(1, catalog=catalog)
    with pytest.raises(ValidationError, match="catalog"):
        ledger.record_cache_hit(1, catalog=catalog)
    assert ledger.reservations() == [] and ledger.usage("account").reserved == 0


def test_lookups_by_text_that_cannot_be_stored_never_fail(ledger: Ledger) -> None:
    """A task id is stored cleaned (U+FFFD for NUL): looking it up with the id as Kling sent it
    finds it on both backends (before: None on SQLite, a StorageError on PostgreSQL)."""
    ledger.set_budget("account", 10)
    res = ledger.attach_task(ledger.reserve(1), "task\x001")
    found = ledger.reservation_for_task("task\x001")
    assert found is not None and found.id == res.id
    assert ledger.get_reservation("job\x00-1") is None
    assert ledger.get_reservation("job-\ud800") is None


def test_metadata_nested_too_deep_is_a_clear_error(ledger: Ledger) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="metadata"):
        ledger.reserve(1, metadata=deep)
    assert ledger.reservations() == []
