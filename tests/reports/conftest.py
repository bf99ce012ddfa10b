"""The ledger fixtures (SQLite and PostgreSQL matrix) for report tests."""

from tests.ledger.conftest import clock, ledger, ledger_url

__all__ = ["clock", "ledger", "ledger_url"]
