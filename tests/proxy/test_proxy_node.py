"""An unmodified third-party client through the proxy: the npm package kling-api over TLS.

The package signs Kling's JWT with the virtual access/secret key pair and insists on an
``https://`` base URL, so the proxy serves TLS with a certificate made in the test (trusted by
Node through ``NODE_EXTRA_CA_CERTS``). Its one task is charged in the ledger exactly what the
simulator deducted from its pack.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from kling_cost.ledger import open_ledger
from kling_cost.proxy.keys import Keys
from kling_cost.proxy.server import ProxyConfig, build_app
from kling_cost.simulator import create_app
from tests.node.harness import KlingApiNode
from tests.proxy.conftest import MASTER
from tests.servers import AK, API_KEY, SK, serve
from tests.tls import TlsFiles


def test_the_npm_kling_api_package_through_the_proxy_is_charged_what_kling_deducted(
    ledger_url: str,
    tls_files: TlsFiles,
    kling_api_node: KlingApiNode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    sim_app = create_app(AK, SK, api_key=API_KEY, task_seconds=0.6, failure_rate=0)
    sim = sim_app.state.simulator
    ledger = open_ledger(ledger_url)
    try:
        issued = Keys(ledger, MASTER).create("node-tool", scopes=["project:film"])
        ledger.set_budget("key:node-tool", 10, "day")
        with serve(sim_app) as kling:
            app = build_app(
                ProxyConfig(upstream=kling, ledger=ledger_url, background=False), ledger=ledger, master=MASTER
            )
            with serve(app, tls=tls_files) as url:
                assert url.startswith("https://")
                run = kling_api_node.run(url, issued.access_key, issued.secret_key, ca_file=tls_files.ca_cert)
        assert run.ok, (run.result, run.stderr)
        assert run.result["final_status"] == "succeed"
        pack = sim.state.packs["video"]
        deducted = Decimal(pack.total) - Decimal(pack.remaining)
        assert run.final_unit_deduction == deducted == Decimal("1.5")
        usage = ledger.usage("key:node-tool", "day")
        assert (usage.used, usage.reserved) == (deducted, Decimal(0))
        charges = ledger.charges()
        assert len(charges) == 1 and charges[0].task_id == run.task_id
        assert set(charges[0].scopes) == {"account", "key:node-tool", "project:film"}
        # the proxy gave the package's create an external id: a retry could never pay twice
        assert str(run.result["external_task_id"]).startswith("kcp-")
        # and Kling never saw the virtual key: the simulator only knows its own access key
        assert all(task.external_task_id.startswith("kcp-") for task in sim.state.tasks.values())
    finally:
        ledger.close()
