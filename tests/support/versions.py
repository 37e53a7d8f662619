"""Two "versions" of a service for the safe-deploy tests, and a client that never stops.

A :class:`VersionServer` is a tiny threaded HTTP server: ``GET /`` answers
its name (or a 500 for a set share of requests) and records each request in
the server's own request histogram (:class:`keel.observe.metrics.Metrics`,
the real family and labels), which ``GET /metrics`` shows — what the canary
analysis reads from a real ``keel serve``.
"""

from __future__ import annotations

import http.client
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import generate_latest

from keel.deploy.haproxy import HAProxy, Server
from keel.observe.metrics import Metrics
from tests.support.processes import free_port


class VersionServer:
    def __init__(self, name: str, *, fail_every: int = 0) -> None:
        self.name = name
        self.metrics = Metrics(slo_threshold=0.3, version="1", release_id=name, git_sha="t")
        self._lock = threading.Lock()
        self._served = 0
        version = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                started = time.perf_counter()
                if self.path == "/metrics":
                    self._answer(200, generate_latest(version.metrics.registry))
                    return
                with version._lock:
                    version._served += 1
                    failing = fail_every > 0 and version._served % fail_every == 0
                status = 500 if failing else 200
                self._answer(status, version.name.encode())
                version.metrics.request_duration.labels("GET", "/", str(status), "true").observe(
                    time.perf_counter() - started
                )

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def __enter__(self) -> VersionServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


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


@contextmanager
def behind_haproxy(baseline: VersionServer, canary: VersionServer) -> Iterator[HAProxy]:
    """Real HAProxy in front of the two: 100 % ``baseline``, 0 % ``canary`` (the server names
    the rollouts' router expects), its socket in a short directory (a path holds ~100 bytes)."""
    servers = [
        Server("baseline", "127.0.0.1", baseline.port, weight=100),
        Server("canary", "127.0.0.1", canary.port, weight=0),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="keel-ha-") as workdir,
        HAProxy(servers, workdir=Path(workdir), bind_port=free_port()) as proxy,
    ):
        yield proxy
