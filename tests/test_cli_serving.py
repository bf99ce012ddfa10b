"""The CLI's servers listen on a socket that answers keep-alive requests without delay."""

from __future__ import annotations

import socket

from kling_cost.cli._serving import listen


def test_the_listening_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    # asyncio turns TCP_NODELAY on for accepted connections only when the listening socket's
    # proto is IPPROTO_TCP; with proto 0 every answer after the first on a keep-alive
    # connection waited ~40 ms for the client's delayed ACK.
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
