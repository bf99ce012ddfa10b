"""An unmodified third-party client, the npm package kling-api 1.0.0, against the simulator over TLS.

The package refuses any base URL but ``https://``: the simulator is served with a certificate
signed by a CA made in the test, which Node trusts through ``NODE_EXTRA_CA_CERTS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest

from kling_cost.kling import KlingClient
from kling_cost.simulator import Simulator, create_app
from tests.node.harness import KlingApiNode
from tests.servers import AK, API_KEY, SK, Receiver, serve
from tests.tls import TlsFiles


@dataclass
class TlsSimulator:
    url: str
    sim: Simulator
    tls: TlsFiles

    def remaining_video_units(self) -> Decimal:
        """The video pack's remaining units as ``/account/costs`` answers over TLS (our own
        Python client, trusting the test CA only)."""
        with (
            httpx.Client(verify=self.tls.client_context()) as http,
            KlingClient(AK, SK, base_url=self.url, http_client=http) as client,
        ):
            packs = client.account_costs().resource_pack_subscribe_infos
        (pack,) = [p for p in packs if p.resource_pack_name == "video pack"]
        return pack.remaining_quantity


@pytest.fixture
def simulator_tls(tls_files: TlsFiles) -> Iterator[TlsSimulator]:
    app = create_app(AK, SK, api_key=API_KEY, task_seconds=0.6, failure_rate=0)
    with serve(app, tls=tls_files) as url:
        yield TlsSimulator(url, app.state.simulator, tls_files)


def test_kling_api_creates_polls_and_reads_a_task_over_tls(
    simulator_tls: TlsSimulator, kling_api_node: KlingApiNode
) -> None:
    assert simulator_tls.url.startswith("https://")
    before = simulator_tls.remaining_video_units()
    run = kling_api_node.run(simulator_tls.url, AK, SK, ca_file=simulator_tls.tls.ca_cert)
    after = simulator_tls.remaining_video_units()

    assert run.ok, (run.result, run.stderr)
    assert run.error is None
    assert run.result["created_status"] == "submitted"
    assert run.result["final_status"] == "succeed"
    assert run.result["videos"] and run.result["videos"][0]["url"].startswith("https://")
    # kling-v2-5-turbo, std (720p), "5" s: 0.3 units a second.
    assert run.final_unit_deduction == Decimal("1.5")
    assert before - after == run.final_unit_deduction
    task = simulator_tls.sim.state.tasks[str(run.task_id)]
    assert task.status == "succeed"
    assert task.charged == run.final_unit_deduction
    assert task.model == "kling-v2-5-turbo"
    assert task.external_task_id is None  # the package sends none unless its caller gives one
    assert task.callback_url is None


def statuses(receiver: Receiver) -> list[str]:
    return [json.loads(body)["task_status"] for _, body in receiver.calls]


def test_kling_api_passes_external_task_id_and_callback_url_and_reports_a_failed_task(
    simulator_tls: TlsSimulator, kling_api_node: KlingApiNode
) -> None:
    receiver = Receiver()
    simulator_tls.sim.state.fail_next(1)
    with serve(receiver.app()) as hooks:
        run = kling_api_node.run(
            simulator_tls.url,
            AK,
            SK,
            ca_file=simulator_tls.tls.ca_cert,
            params={
                "model_name": "kling-v1",
                "external_task_id": "harness-ext-1",
                "callback_url": f"{hooks}/hook",
            },
        )
        with receiver.changed:  # callbacks are at least once: wait for the one saying "failed"
            assert receiver.changed.wait_for(lambda: "failed" in statuses(receiver), timeout=10)

    assert not run.ok
    assert run.returncode == 1
    assert run.result["final_status"] == "failed"
    assert run.result["external_task_id"] == "harness-ext-1"
    assert run.result["final_unit_deduction"] == "0"
    # The package's poller throws its own KlingAPIError (code 5000) with task_status_msg.
    assert run.error is not None and run.error["name"] == "KlingAPIError"
    assert run.error["code"] == 5000
    assert run.error["message"] == run.result["task_status_msg"] == "task failed (simulated failure)"
    task = simulator_tls.sim.state.tasks[str(run.task_id)]
    assert task.external_task_id == "harness-ext-1"
    assert task.callback_url == f"{hooks}/hook"
    assert task.charged == 0


def test_kling_api_reports_kling_auth_errors(
    simulator_tls: TlsSimulator, kling_api_node: KlingApiNode
) -> None:
    run = kling_api_node.run(simulator_tls.url, AK, "not-the-secret-key", ca_file=simulator_tls.tls.ca_cert)

    assert not run.ok and run.task_id is None
    assert run.error is not None
    assert run.error["name"] == "KlingAPIError"
    assert run.error["http_status"] == 401
    assert 1000 <= run.error["code"] <= 1004
    assert not simulator_tls.sim.state.tasks


def test_kling_api_refuses_a_certificate_it_does_not_trust(
    simulator_tls: TlsSimulator, kling_api_node: KlingApiNode
) -> None:
    run = kling_api_node.run(simulator_tls.url, AK, SK, ca_file=None)

    assert not run.ok and run.task_id is None
    assert run.error is not None
    assert "certificate" in run.error["message"]
    assert not simulator_tls.sim.state.tasks


def test_kling_api_refuses_plain_http(kling_api_node: KlingApiNode) -> None:
    run = kling_api_node.run("http://127.0.0.1:9", AK, SK)

    assert not run.ok
    assert run.error == {
        "name": "Error",
        "message": "Base URL must use HTTPS protocol",
        "code": None,
        "http_status": None,
        "request_id": None,
    }
