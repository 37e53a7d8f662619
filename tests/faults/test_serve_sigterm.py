"""SIGTERM to ``keel serve`` under load: no connection is accepted that is not served.

Real processes, real sockets. Clients keep sending — some over kept-alive
connections, some with a new connection per request so the listen backlog is
exercised — through the drain and until the server has exited. Every request
must end one of two ways: a complete HTTP answer (200, or 503 while draining),
or a refusal at connect time. A connection the kernel accepted and then reset
or closed without an answer (``ReadError``, ``RemoteProtocolError``, ...) is a
request lost while the client believed it was being served — with
``--workers 2`` the parent's copy of the listening socket used to queue them
after both workers had stopped accepting. Both shapes, one worker and two,
are held, with SIGTERM sent to the main process (Kubernetes, docker) and to the
whole process group (systemd), where each worker receives it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.support.app import World, seed_database
from tests.support.policies import generous_policy
from tests.support.processes import KeelServer, keel_server, server_env

from keel.settings import Settings

pytestmark = [pytest.mark.fault, pytest.mark.e2e]

DRAIN_SECONDS = 2.0
GRACE_SECONDS = 10.0
SETTLE_SECONDS = Settings().serve_listener_settle_seconds
CLIENTS_KEPT_ALIVE = 2
CLIENTS_NEW_CONNECTION = 4
LOAD_BOUND_SECONDS = 45.0  # every loop below ends by this, whatever happens
REQUESTS_PER_CLIENT = 5000


@dataclass
class Tally:
    """What each request came to, with the time it was sent (monotonic)."""

    answered: list[tuple[float, int]] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_answer(self, sent: float, status: int) -> None:
        with self.lock:
            self.answered.append((sent, status))
            if status not in (200, 503):
                self.lost.append(f"status {status}")

    def add_refusal(self, sent: float) -> None:
        with self.lock:
            self.refused.append(sent)

    def add_loss(self, what: str) -> None:
        with self.lock:
            self.lost.append(what)


def _client(base_url: str, *, keep_alive: bool) -> httpx.Client:
    # A long read timeout: a connection that is accepted and never served shows as a
    # reset when the process holding the socket exits, not as a timeout of ours.
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(30.0, connect=15.0),
        limits=httpx.Limits(max_keepalive_connections=1 if keep_alive else 0),
    )


def _load(
    base_url: str,
    routes: list[tuple[str, dict[str, str]]],
    *,
    keep_alive: bool,
    tally: Tally,
    stop: threading.Event,
) -> None:
    deadline = time.monotonic() + LOAD_BOUND_SECONDS
    with _client(base_url, keep_alive=keep_alive) as client:
        for index in range(REQUESTS_PER_CLIENT):
            if stop.is_set() or time.monotonic() > deadline:
                return
            path, headers = routes[index % len(routes)]
            sent = time.monotonic()
            try:
                response = client.get(path, headers=headers)
            except httpx.ConnectError:
                tally.add_refusal(sent)
                time.sleep(0.05)  # refused: the listener is gone; do not spin
            except httpx.HTTPError as error:
                tally.add_loss(f"{type(error).__name__}: {error} ({path})")
            else:
                tally.add_answer(sent, response.status_code)


@contextmanager
def _serve(database_url: str, workdir: Path, workers: int) -> Iterator[KeelServer]:
    env = server_env(
        database_url,
        workdir,
        {
            "KEEL_LOG_FORMAT": "json",
            "KEEL_RATELIMIT_POLICY": str(generous_policy(workdir)),
            "KEEL_SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "KEEL_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            # the shipped settle, which keel_env shortens for tests not about stopping
            "KEEL_SERVE_LISTENER_SETTLE_SECONDS": str(SETTLE_SECONDS),
            "KEEL_HEALTH_CACHE_SECONDS": "0",
            "KEEL_AUTH_CACHE_SECONDS": "5",
        },
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with keel_server(env, workdir, workers=workers, ready_path="/ready") as server:
        yield server


def _listening_inode(port: int) -> str | None:
    """The inode of the socket listening on 127.0.0.1:``port``, from /proc/net/tcp."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return fields[9]
    return None


def _holds_socket(pid: int, inode: str) -> bool:
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == f"socket:[{inode}]":
                return True
    return False


@dataclass
class Stop:
    """What the test saw of the stop itself, beside the load."""

    sigterm_at: float = 0.0
    exited_at: float = 0.0
    exit_code: int | None = None
    probed_after: float = 0.0  # seconds from SIGTERM to the mid-drain probe
    draining_live: httpx.Response | None = None
    draining_refused: str | None = None  # the mid-drain probe could not connect
    draining_ready: int | None = None
    parent_held_listener: bool | None = None


def _sigterm_under_load(
    server: KeelServer, world: World, recognition_id: str, inode: str, *, to_group: bool
) -> tuple[Tally, Stop]:
    """Load, SIGTERM after a second of it, load until the process has exited."""
    routes = [
        ("/live", {}),
        (f"/v1/recognitions/{recognition_id}", world.bob.headers),
    ]
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_load,
            args=(server.url, routes),
            kwargs={"keep_alive": index < CLIENTS_KEPT_ALIVE, "tally": tally, "stop": stop},
            daemon=True,
        )
        for index in range(CLIENTS_KEPT_ALIVE + CLIENTS_NEW_CONNECTION)
    ]
    for thread in threads:
        thread.start()
    seen = Stop()
    try:
        time.sleep(1.0)
        seen.sigterm_at = time.monotonic()
        if to_group:  # systemd's default: every process of the service, workers too
            os.killpg(server.process.pid, signal.SIGTERM)  # its own session: only keel's
        else:  # Kubernetes and docker: the main process only
            os.kill(server.process.pid, signal.SIGTERM)
        # Mid-drain: still serving, telling clients not to reuse connections, unready —
        # and (with workers) the parent no longer holds the listening socket.
        time.sleep(DRAIN_SECONDS / 2)
        seen.parent_held_listener = _holds_socket(server.process.pid, inode)
        seen.probed_after = time.monotonic() - seen.sigterm_at
        with httpx.Client(base_url=server.url, timeout=10.0) as probe:
            try:
                seen.draining_live = probe.get("/live")
                seen.draining_ready = probe.get("/ready").status_code
            except httpx.ConnectError as error:
                seen.draining_refused = f"{type(error).__name__}: {error}"
        seen.exit_code = server.wait(DRAIN_SECONDS + GRACE_SECONDS + 20.0)
        seen.exited_at = time.monotonic()
        time.sleep(0.5)  # a last few attempts against the closed port: refused
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=LOAD_BOUND_SECONDS)
    return tally, seen


def _stop_report(log: str, summary: str) -> str:
    """What a failed stop shows: every line but the access lines, in full, then the last of those.

    The supervisor and every worker write to one stream and a line does not name its
    process, so a worker that did not stop is known by the lines it lacks (its
    ``shutdown_draining``, ``listener_quiesced``, ``keel_stopped``) — which the tail
    of a log full of access lines never showed.
    """
    lines = log.splitlines()
    access = [line for line in lines if '"event": "http_request"' in line]
    other = [line for line in lines if '"event": "http_request"' not in line]
    return "\n".join(
        [
            summary,
            f"--- {len(other)} lines other than the {len(access)} access lines:",
            *other,
            "--- the last access lines:",
            *access[-10:],
        ]
    )


def _recognition(base_url: str, world: World) -> str:
    response = httpx.post(
        base_url + "/v1/recognitions",
        json={"recipient_id": world.bob.id, "message": "steady"},
        headers=world.alice.headers,
        timeout=10.0,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("backend", "workers", "to"),
    [
        ("sqlite", 1, "process"),
        ("sqlite", 2, "group"),
        pytest.param("postgres", 2, "process", marks=pytest.mark.postgres),
    ],
)
async def test_sigterm_under_load_accepts_no_connection_it_does_not_serve(
    database_url: str, tmp_path: Path, workers: int, to: str
) -> None:
    world = await seed_database(database_url)
    with _serve(database_url, tmp_path, workers) as server:
        recognition_id = _recognition(server.url, world)
        inode = _listening_inode(server.port)
        assert inode is not None
        holds_before = _holds_socket(server.process.pid, inode)
        tally, seen = await asyncio.to_thread(
            _sigterm_under_load, server, world, recognition_id, inode, to_group=to == "group"
        )
        log = server.log()

    summary = (
        f"{len(tally.answered)} answered, {len(tally.refused)} refused, "
        f"{len(tally.lost)} lost: {tally.lost[:5]}"
    )
    assert not tally.lost, _stop_report(log, summary)
    assert seen.exit_code == 0, _stop_report(log, summary)
    # The drain served: requests sent after SIGTERM were answered.
    served_after = [status for sent, status in tally.answered if sent > seen.sigterm_at]
    assert served_after.count(200) > 10, summary
    # A probe this test sent after the drain (its own threads starved of CPU) proves nothing.
    assert seen.probed_after < DRAIN_SECONDS, f"probe sent {seen.probed_after:.2f} s after SIGTERM"
    assert seen.draining_refused is None, _stop_report(log, f"mid-drain: {seen.draining_refused}")
    assert seen.draining_live is not None
    assert seen.draining_live.status_code == 200
    assert seen.draining_live.headers["connection"] == "close"
    assert seen.draining_ready == 503
    # One process: it is the server and holds its listener until the drain ends. With
    # workers the parent held it too, and kept it after the workers had closed theirs.
    assert holds_before is True
    assert seen.parent_held_listener is (workers == 1)
    # Once the process is gone, connections are refused rather than left hanging.
    assert tally.refused, summary
    assert seen.exited_at - seen.sigterm_at < DRAIN_SECONDS + GRACE_SECONDS + 5.0, _stop_report(
        log, summary
    )
    assert '"event": "shutdown_draining"' in log
    assert '"event": "listener_quiesced"' in log
    # Every server process ran its whole shutdown, and its last lines were written.
    assert log.count('"event": "keel_stopped"') == workers, _stop_report(log, summary)
