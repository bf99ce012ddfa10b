from tests.ledger.conftest import clock, ledger, ledger_url  # noqa: F401 - the backend matrix
