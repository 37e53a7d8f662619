"""Real version groups for the on-one-machine deploy tests: ``keel serve`` processes of this
checkout behind a real HAProxy, and a client that keeps a steady load through it.

One :class:`Stage` per test module: HAProxy and the first group ("blue") start once; each
test deploys a new group onto it, and whichever group wins stays live for the next test. Every
process the stage (or a deployment it ran: its record names them, in files or, appended by the
test, in ``started``) started is stopped at the end, by pid.
"""

from __future__ import annotations

import asyncio
import http.client
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from keel.deploy.fronts import Front, this_host
from keel.deploy.groups import VersionGroup, start_group, stop_group, wait_ready
from keel.deploy.haproxy import HAProxy, RuntimeApi, Server
from keel.deploy.local import read_record
from keel.deploy.processes import Source, is_ours, start_mark
from tests.support.app import seeded_world
from tests.support.policies import generous_policy
from tests.support.processes import free_port, server_env

SERVED_BY = "X-Keel-Server"
PATH = "/v1/users/me"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    server: str
    seconds: float


class LoadClient:
    """A few threads sending ``GET /v1/users/me`` through the proxy at a steady ``rate`` (per
    second, all threads together), on kept-alive connections (reconnecting after an error),
    recording every answer and every failure: a 5xx or no answer at all. The rate is bounded
    so that the load leaves the (shared, small) machine room to start the next version."""

    def __init__(self, port: int, token: str, *, threads: int = 3, rate: float = 150.0) -> None:
        self.port = port
        self.spacing = threads / rate
        self.headers = {"Authorization": f"Bearer {token}"}
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        due = time.monotonic()
        while not self._stop.is_set():
            due += self.spacing
            ahead = due - time.monotonic()
            if ahead > 0:
                self._stop.wait(ahead)
            else:
                due = time.monotonic()  # behind (a slow answer): no burst to catch up
            started = time.perf_counter()
            try:
                connection.request("GET", PATH, headers=self.headers)
                response = connection.getresponse()
                body = response.read()
                answer = Answer(
                    response.status, response.getheader(SERVED_BY, "-"),
                    time.perf_counter() - started,
                )  # fmt: skip
                with self._lock:
                    self.answers.append(answer)
                    if response.status >= 500:
                        self.failures.append(f"{response.status} {answer.server} {body[:200]!r}")
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as error:
                with self._lock:
                    self.failures.append(repr(error))
                connection.close()
        connection.close()

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_for(self, count: int, *, timeout: float = 20.0) -> list[Answer]:
        """The next ``count`` answers (bounded in time)."""
        start = self.count()
        deadline = time.monotonic() + timeout
        while self.count() < start + count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.count() >= start + count, f"only {self.count() - start} answers in {timeout} s"
        with self._lock:
            return self.answers[start : start + count]

    def error_rate(self) -> float:
        with self._lock:
            return len(self.failures) / max(1, len(self.answers) + len(self.failures))

    def __enter__(self) -> LoadClient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


@dataclass
class Stage:
    """HAProxy, the live group, and what the servers share (database, settings, a token)."""

    workdir: Path
    env: Mapping[str, str]
    proxy: HAProxy
    live: VersionGroup
    token: str
    started: list[VersionGroup] = field(default_factory=list)

    @property
    def api(self) -> RuntimeApi:
        return self.proxy.api

    @property
    def port(self) -> int:
        return self.proxy.bind[1]

    def env_with(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}

    def weights(self) -> dict[str, int]:
        """Each server's weight in HAProxy (the servers HAProxy knows)."""
        return {name: self.api.weight(name) for name in self.api.sessions()}

    def proxy_log(self) -> str:
        """The end of HAProxy's log (servers going down and up), for a failure's message."""
        return self.proxy.log_path.read_text(errors="replace")[-3000:]

    def client(self) -> LoadClient:
        return LoadClient(self.port, self.token)

    def front(self, environment: str) -> Front:
        """The stage's HAProxy as ``keel deploy front`` would register it."""
        pid = self.proxy.pid
        mark = start_mark(pid) if pid is not None else None
        if pid is None or mark is None:
            raise AssertionError("the stage's HAProxy is not running")
        return Front(
            environment=environment,
            host_name=this_host(),
            workdir=self.workdir,
            admin_socket=self.proxy.admin_socket,
            config_path=self.proxy.config_path,
            bind_host=self.proxy.bind[0],
            bind_port=self.port,
            pid=pid,
            start_mark=mark,
            started_at=datetime.now(UTC),
        )


def running(group: VersionGroup) -> list[int]:
    """The pids of the group that still run ``keel serve``."""
    return [process.pid for process in group.processes if is_ours(process)]


@contextmanager
def stage() -> Iterator[Stage]:
    """HAProxy in front of a first group of one ``keel serve`` from this checkout."""
    with tempfile.TemporaryDirectory(prefix="keel-dp-") as directory:
        workdir = Path(directory)
        # The deploy walks' load stays under these (50 000 a minute, all at once).
        policy = generous_policy(workdir, limit=50000, burst=50000)
        env = server_env(
            f"sqlite+aiosqlite:///{workdir / 'keel.db'}",
            workdir,
            {
                "KEEL_RATELIMIT_POLICY": str(policy),
                "KEEL_AUTH_CACHE_SECONDS": "30",
                "KEEL_INPROCESS_WORKER": "off",
                # A retired group drains briefly: HAProxy has already stopped sending to it.
                "KEEL_SHUTDOWN_DRAIN_SECONDS": "0.3",
                "KEEL_SHUTDOWN_GRACE_SECONDS": "5",
                "KEEL_SERVE_LISTENER_SETTLE_SECONDS": "0.1",
            },
        )
        source = Source.current_checkout()
        blue = start_group("blue", source, [free_port()], env=env, workdir=workdir)
        started = [blue]
        try:
            asyncio.run(wait_ready(blue))
            world = seeded_world(env["KEEL_DATABASE_URL"])
            servers = [
                Server(name, process.host, process.port, weight=256)
                for name, process in zip(blue.server_names(), blue.processes, strict=True)
            ]
            with HAProxy(
                servers,
                workdir=workdir,
                bind_port=free_port(),
                health_path="/ready",
                served_by_header=SERVED_BY,
            ) as proxy:
                yield Stage(workdir, env, proxy, blue, world.alice.token, started)
        finally:
            for group in [*started, *_recorded_groups(workdir)]:
                stop_group(group, wait_seconds=10)


def _recorded_groups(workdir: Path) -> list[VersionGroup]:
    """Every group a deployment on the stage started (its record names them all)."""
    found = []
    for path in sorted((workdir / "deployments").glob("*.json")):
        record = read_record(workdir, path.stem)
        if record is not None:
            found += [record.baseline, *([record.candidate] if record.candidate else [])]
            found += [record.fresh_baseline] if record.fresh_baseline else []
    return found
