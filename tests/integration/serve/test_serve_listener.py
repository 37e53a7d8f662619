"""Quiescing a listener: no new handshake, the queued ones still served, then refused.

Real sockets on 127.0.0.1 (Linux: the socket filter is what is tested).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from keel.serve.listener import has_queued_connections, quiesce, refuse_new_connections

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_ATTACH_FILTER")


@contextmanager
def listening() -> Iterator[tuple[socket.socket, int]]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server, server.getsockname()[1]


def _connects(port: int, timeout: float) -> bool:
    with socket.socket() as client:
        client.settimeout(timeout)
        try:
            client.connect(("127.0.0.1", port))
        except TimeoutError:
            return False
        return True


def test_a_filtered_listener_completes_no_new_handshake_but_keeps_the_queued_one() -> None:
    with listening() as (server, port), socket.create_connection(("127.0.0.1", port)) as queued:
        assert has_queued_connections(server)

        assert refuse_new_connections(server) is True

        assert _connects(port, timeout=0.3) is False  # the SYN is dropped: no handshake
        accepted, _ = server.accept()  # the one already queued is still there to serve
        with accepted:
            queued.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
        assert not has_queued_connections(server)

    # The listener closed: a new connection is refused at connect time.
    with socket.socket() as client:
        client.settimeout(3.0)
        with pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))


async def test_quiesce_waits_for_the_queue_to_be_accepted_then_returns() -> None:
    with listening() as (server, port):
        server.setblocking(False)
        loop = asyncio.get_running_loop()
        accepted: list[socket.socket] = []
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]

        async def accept_later() -> None:
            await asyncio.sleep(0.3)  # a busy loop: the queue waits for it
            for _ in clients:
                connection, _ = await loop.sock_accept(server)
                accepted.append(connection)

        started = time.monotonic()
        acceptor = asyncio.create_task(accept_later())
        await quiesce([server], settle_seconds=0.05, bound_seconds=5.0)
        waited = time.monotonic() - started
        await acceptor

        assert len(accepted) == 3
        assert waited >= 0.3  # not before the queue was empty, though the settle was shorter
        assert not has_queued_connections(server)
        for connection in [*accepted, *clients]:
            connection.close()


async def test_quiesce_gives_up_on_a_queue_nobody_accepts_at_its_bound() -> None:
    with listening() as (server, port), socket.create_connection(("127.0.0.1", port)):
        started = time.monotonic()
        await quiesce([server], settle_seconds=0.05, bound_seconds=0.4)
        assert 0.4 <= time.monotonic() - started < 3.0
