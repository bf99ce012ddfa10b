"""The SSRF guard for client-given callback URLs: the check at create time, and the check at
connect time that defeats DNS rebinding, over real HTTP(S) on loopback."""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn

from kling_cost.errors import InvalidRequest, KlingCostError
from kling_cost.proxy.callback_url import (
    GuardedTransport,
    acheck_callback_url,
    check_callback_url,
    forbidden_reason,
    guarded_client,
    system_resolver,
)
from tests.servers import Receiver, free_port, serve

NAMES = {
    "localhost": ["127.0.0.1", "::1"],
    "public.example": ["93.184.216.34"],
    "public6.example": ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"],
    "split.example": ["93.184.216.34", "10.0.0.7"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:10.1.2.3"],
}


def resolver(host: str, port: int) -> list[str]:
    """A DNS of fixed answers; any other name does not resolve."""
    try:
        return NAMES[host]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


def no_lookup(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} was looked up")


REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.8.9.10:8080/hook", "loopback"),
    ("http://localhost/hook", "resolves to 127.0.0.1"),
    ("http://LOCALHOST:9000/hook", "resolves to 127.0.0.1"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://172.31.255.254/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://metadata.example/", "cloud metadata"),
    ("http://169.254.10.10/", "link-local"),
    ("http://100.64.0.1/hook", "shared address space"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://0.0.0.0:8788/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://255.255.255.255/hook", "broadcast"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://198.18.0.1/hook", "benchmarking"),
    ("http://[::ffff:127.0.0.1]/hook", "IPv4-mapped 127.0.0.1"),
    ("http://[::ffff:a9fe:a9fe]/hook", "IPv4-mapped 169.254.169.254"),
    ("http://mapped.example/hook", "IPv4-mapped 10.1.2.3"),
    ("http://[2002:7f00:1::]/hook", "6to4 127.0.0.1"),
    ("http://[2002:a00:1::1]/hook", "6to4 10.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/hook", "NAT64 169.254.169.254"),
    ("http://[::127.0.0.1]/hook", "IPv4-compatible"),
    ("http://[fd00::1]/hook", "unique local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://[2001:db8::1]/hook", "documentation"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook", "Teredo"),
    ("http://split.example/hook", "resolves to 10.0.0.7"),
    ("ftp://public.example/hook", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://public.example/", "http:// or https://"),
    ("//public.example/hook", "http:// or https://"),
    ("http:///hook", "must name a host"),
    ("http://user:pass@public.example/hook", "user name or password"),
    ("http://user@public.example/hook", "user name or password"),
    ("http://public.example\\@127.0.0.1/hook", "user name or password"),
    ("http://nowhere.invalid/hook", "does not resolve"),
    ("http://public.example/a b", "spaces or control characters"),
    ("http://public.example/\r\nX-Injected: 1", "spaces or control characters"),
    ("http://[::1/hook", "not a valid URL"),
    ("http://public.example:99999/hook", "not a valid URL"),
    ("http://public.example:0/hook", "not a valid URL"),
    ("http://public.example/" + "a" * 2100, "longer than 2048"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_callback_urls_into_the_network_are_refused_with_1201(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(why)) as info:
        check_callback_url(url, allowed_hosts=(), resolver=resolver)
    assert info.value.code == 1201
    assert info.value.http_status == 400
    assert isinstance(info.value, KlingCostError)


@pytest.mark.parametrize("url", [None, 42, "", b"http://public.example/"])
def test_a_callback_url_that_is_not_text_is_refused(url: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_callback_url(url, resolver=resolver)  # type: ignore[arg-type]
    assert info.value.code == 1201


def test_the_real_resolver_refuses_localhost_and_an_unresolvable_name() -> None:
    with pytest.raises(InvalidRequest, match="loopback"):
        check_callback_url("http://localhost:8080/hook")
    with pytest.raises(InvalidRequest, match="does not resolve"):
        check_callback_url("http://kling-cost-relay-test.invalid/hook")
    assert "127.0.0.1" in system_resolver("localhost", 80)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook",
        "http://93.184.216.34:8080/kling/callback?token=abc",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "https://[2002:5db8:d822::1]/hook",  # 6to4 of a public address
        "https://[::ffff:93.184.216.34]/hook",  # IPv4-mapped public address
    ],
)
def test_a_public_ip_literal_is_accepted_without_a_lookup_or_a_connection(url: str) -> None:
    assert check_callback_url(url, allowed_hosts=(), resolver=no_lookup) == url


def test_a_public_name_is_accepted_when_all_its_addresses_are_public() -> None:
    assert (
        check_callback_url("https://public.example/hook", resolver=resolver) == "https://public.example/hook"
    )
    assert check_callback_url("https://public6.example/h", resolver=resolver) == "https://public6.example/h"


def test_allowed_hosts_let_a_private_host_through_exactly() -> None:
    url = "http://127.0.0.1:9000/hook"
    assert check_callback_url(url, allowed_hosts={"127.0.0.1"}, resolver=no_lookup) == url
    assert check_callback_url(url, allowed_hosts={"127.0.0.1:9000"}, resolver=no_lookup) == url
    with pytest.raises(InvalidRequest, match="loopback"):
        check_callback_url(url, allowed_hosts={"127.0.0.1:9001"}, resolver=no_lookup)
    with pytest.raises(InvalidRequest, match="loopback"):
        check_callback_url(url, allowed_hosts={"127.0.0.2", "localhost"}, resolver=no_lookup)
    assert check_callback_url("http://[::1]:9000/h", allowed_hosts={"[::1]:9000"}, resolver=no_lookup)
    with pytest.raises(InvalidRequest, match="loopback"):
        check_callback_url("http://[::1]:9001/h", allowed_hosts={"[::1]:9000"}, resolver=no_lookup)
    with pytest.raises(InvalidRequest, match="loopback"):
        check_callback_url("http://127.0.0.1:80/h", allowed_hosts={"127.0.0.1:http"}, resolver=no_lookup)
    assert check_callback_url("http://[::1]/h", allowed_hosts={"::1"}, resolver=no_lookup)
    assert check_callback_url("http://LocalHost/h", allowed_hosts={" localhost "}, resolver=no_lookup)
    assert check_callback_url(
        "https://hooks.internal/h", allowed_hosts={"HOOKS.INTERNAL:443"}, resolver=no_lookup
    )
    # the scheme and the user rules hold for allowed hosts too
    with pytest.raises(InvalidRequest, match="user name"):
        check_callback_url("http://a:b@127.0.0.1/h", allowed_hosts={"127.0.0.1"}, resolver=no_lookup)
    with pytest.raises(InvalidRequest, match="https://"):
        check_callback_url("ftp://127.0.0.1/h", allowed_hosts={"127.0.0.1"}, resolver=no_lookup)


def test_the_reasons_name_the_kind_of_address() -> None:
    ip = ipaddress.ip_address
    assert forbidden_reason(ip("93.184.216.34")) is None
    assert forbidden_reason(ip("8.8.8.8")) is None
    assert forbidden_reason(ip("127.0.0.1")) == "loopback"
    assert forbidden_reason(ip("169.254.169.254")) == "link-local (the cloud metadata service)"
    assert forbidden_reason(ip("::ffff:192.168.0.1")) == "private (IPv4-mapped 192.168.0.1)"
    assert forbidden_reason(ip("fd00:ec2::254")) == "private (unique local)"  # AWS's IPv6 metadata


def test_the_async_check_looks_up_in_a_worker_thread() -> None:
    callers: list[str] = []

    def recording(host: str, port: int) -> list[str]:
        callers.append(threading.current_thread().name)
        return resolver(host, port)

    async def main() -> None:
        assert await acheck_callback_url("https://public.example/h", resolver=recording)
        with pytest.raises(InvalidRequest, match="cloud metadata"):
            await acheck_callback_url("http://metadata.example/h", resolver=recording)
        assert await acheck_callback_url("http://metadata.example/h", allowed_hosts={"metadata.example"})

    anyio.run(main)
    assert len(callers) == 2 and threading.main_thread().name not in callers


# -- the connect-time check --------------------------------------------------------------------


class Flipping:
    """A DNS that answers a public address first and loopback afterwards (DNS rebinding)."""

    def __init__(self, first: list[str], then: list[str]) -> None:
        self.answers = [first]
        self.then = then
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers.pop(0) if self.answers else self.then


def test_the_connect_time_check_refuses_a_name_that_turned_into_loopback() -> None:
    receiver = Receiver()
    with serve(receiver.app()) as base:
        port = int(base.rsplit(":", 1)[1])
        url = f"http://rebind.example:{port}/hook"
        dns = Flipping(["93.184.216.34"], ["127.0.0.1"])
        assert check_callback_url(url, resolver=dns) == url  # looked public when checked

        async def main() -> None:
            async with guarded_client(resolver=dns, timeout=5) as client:
                with pytest.raises(InvalidRequest, match=r"resolves to 127\.0\.0\.1") as info:
                    await client.post(url, content=b"{}")
                assert info.value.code == 1201

        anyio.run(main)
        assert dns.calls == 2  # looked up again when connecting
        assert receiver.calls == []  # nothing reached the loopback receiver


def test_the_guarded_client_connects_to_the_address_it_checked_and_keeps_the_name() -> None:
    receiver = Receiver()
    with serve(receiver.app()) as base:
        port = int(base.rsplit(":", 1)[1])
        looked_up: list[tuple[str, int]] = []

        def dns(host: str, port: int) -> list[str]:
            looked_up.append((host, port))
            return ["127.0.0.1"]

        async def main() -> int:
            async with guarded_client(allowed_hosts={"hooks.internal"}, resolver=dns) as client:
                response = await client.post(f"http://hooks.internal:{port}/hook", content=b'{"a":1}')
                return response.status_code

        assert anyio.run(main) == 200
    assert looked_up == [("hooks.internal", port)]
    headers, body = receiver.calls[0]
    assert headers["host"] == f"hooks.internal:{port}"
    assert body == b'{"a":1}'


def test_the_guarded_client_never_follows_a_redirect() -> None:
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    target = Receiver()
    with serve(target.app()) as other:
        app = Starlette(
            routes=[Route("/hook", lambda r: RedirectResponse(f"{other}/hook", 307), methods=["POST"])]
        )
        with serve(app) as base:

            async def main() -> int:
                async with guarded_client(allowed_hosts={"127.0.0.1"}) as client:
                    return (await client.post(f"{base}/hook", content=b"{}")).status_code

            assert anyio.run(main) == 307
    assert target.calls == []


def test_a_connection_refused_is_an_httpx_connect_error() -> None:
    port = free_port()

    async def main() -> None:
        async with guarded_client(allowed_hosts={"127.0.0.1"}) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"http://127.0.0.1:{port}/hook", content=b"{}")

    anyio.run(main)


# -- TLS: connecting to the checked address still verifies the certificate of the name --------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes this test's certificate; install it")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.example",
            "-addext", "subjectAltName=DNS:hooks.example",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@contextmanager
def serve_tls(app: object, cert: Path, key: Path) -> Iterator[int]:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield config.port
    finally:
        server.should_exit = True
        thread.join(10)


def test_tls_is_verified_against_the_host_name_not_the_address(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    trust = ssl.create_default_context(cafile=str(cert))
    receiver = Receiver()
    with serve_tls(receiver.app(), cert, key) as port:

        async def post(url: str, allowed: set[str]) -> int:
            dns = {"hooks.example": ["127.0.0.1"]}
            async with httpx.AsyncClient(
                transport=GuardedTransport(allowed_hosts=allowed, resolver=lambda h, p: dns[h], verify=trust)
            ) as client:
                return (await client.post(url, content=b"{}")).status_code

        # the name resolves to loopback (allowed here), the connection goes to 127.0.0.1 and the
        # certificate of hooks.example is checked against hooks.example: accepted
        assert anyio.run(post, f"https://hooks.example:{port}/hook", {"hooks.example"}) == 200
        # the same server by its address: the certificate does not name it, refused
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            anyio.run(post, f"https://127.0.0.1:{port}/hook", {"127.0.0.1"})
    assert len(receiver.calls) == 1
