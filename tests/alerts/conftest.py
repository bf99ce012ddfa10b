from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.ledger.conftest import clock, ledger, ledger_url  # noqa: F401 - the backend matrix
from tests.servers import free_port


@dataclass
class Hook:
    """A webhook receiver on loopback: records every POST; answers 500 to the first ``fail`` ones
    (with ``echo``, the 500's body repeats the request's path, as some servers do)."""

    fail: int = 0
    echo: bool = False
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    @property
    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b, code in self.requests if code == 200]

    def json(self) -> list[Any]:
        return [json.loads(b) for _, b in self.accepted]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.accepted) >= count, timeout):
                raise AssertionError(f"expected {count} accepted requests, got {len(self.accepted)}")


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.changed:
                code = 500 if len([r for r in state.requests if r[2] == 500]) < state.fail else 200
                state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, code))
                state.paths.append(self.path)
                state.changed.notify_all()
            failed = f"receiver down; you sent {self.path}" if state.echo else "receiver down"
            payload = b"ok" if code == 200 else failed.encode()
            self.send_response(code)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Mailbox:
    messages: list[Any] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes, policy

        mail = message_from_bytes(envelope.content, policy=policy.default)
        with self.changed:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), mail))
            self.changed.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"expected {count} e-mails, got {len(self.messages)}")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
