"""Real HAProxy in front of two tiny HTTP servers: weights changed live through the runtime
API shift the traffic, and a drain empties a server — with zero failed requests from a client
that never stops."""

from __future__ import annotations

import http.client
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.support.processes import free_port
from tests.support.services import need_binary

from keel.deploy.haproxy import HAProxy, HAProxyCommandFailed, Server, render_config

pytestmark = pytest.mark.e2e


def _server(name: str) -> ThreadingHTTPServer:
    body = name.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    return httpd


class SteadyClient:
    """Requests one after another, each on a new connection, until stopped; records answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                connection.request("GET", "/", headers={"Connection": "close"})
                response = connection.getresponse()
                text = response.read().decode()
                if response.status == 200:
                    self.answers.append(text)
                else:
                    self.failures.append(f"{response.status} {text}")
            except OSError as error:
                self.failures.append(repr(error))
            finally:
                connection.close()

    def mark(self) -> int:
        return len(self.answers)

    def wait_for(self, count: int, *, timeout: float = 15.0) -> list[str]:
        """The next ``count`` answers after now (bounded in time)."""
        start = self.mark()
        deadline = time.monotonic() + timeout
        while self.mark() < start + count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.mark() >= start + count, f"only {self.mark() - start} answers in {timeout} s"
        return self.answers[start : start + count]

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def versions() -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    blue, green = _server("blue"), _server("green")
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (blue, green)]
    for thread in threads:
        thread.start()
    yield blue, green
    for server in (blue, green):
        server.shutdown()
        server.server_close()


def test_weights_shift_traffic_live_and_a_drain_empties_a_server_with_no_failed_request(
    versions: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    blue, green = versions
    servers = [
        Server("blue", "127.0.0.1", blue.server_address[1], weight=100),
        Server("green", "127.0.0.1", green.server_address[1], weight=0),
    ]
    port = free_port()
    # A short directory: a unix socket path holds ~100 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="keel-ha-") as workdir,
        HAProxy(servers, workdir=Path(workdir), bind_port=port) as proxy,
        SteadyClient(port) as client,
    ):
        assert set(client.wait_for(40)) == {"blue"}

        proxy.api.set_weight("green", 100)  # 50 % each, no reload
        assert proxy.api.weight("green") == 100
        client.wait_for(2)  # requests already on their way
        shared = client.wait_for(100)
        assert 30 <= shared.count("green") <= 70, shared

        proxy.api.set_weight("green", 256)
        proxy.api.set_weight("blue", 0)
        client.wait_for(2)
        assert set(client.wait_for(40)) == {"green"}

        proxy.api.set_weight("blue", 100)
        proxy.api.drain("green")  # no new requests, whatever its weight
        client.wait_for(2)
        assert set(client.wait_for(40)) == {"blue"}
        assert proxy.api.sessions()["green"] == 0

        with pytest.raises(HAProxyCommandFailed):
            proxy.api.set_weight("purple", 10)
    assert client.failures == []
    assert len(client.answers) >= 220


def test_the_configuration_balances_roundrobin_over_every_version() -> None:
    config = render_config(
        [Server("a", "127.0.0.1", 8001, 100), Server("b", "127.0.0.1", 8002, 0)],
        bind_host="127.0.0.1",
        bind_port=8000,
        admin_socket=Path("/tmp/x.sock"),
        health_path="/ready",
    )
    assert "balance roundrobin" in config
    assert "stats socket /tmp/x.sock mode 600 level admin" in config
    assert "server b 127.0.0.1:8002 weight 0 check" in config
    assert "option httpchk GET /ready" in config
