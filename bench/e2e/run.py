"""End-to-end comparison of a real ``keel serve`` with its peers (issue 19).

Measures whole requests from outside, over 127.0.0.1, against the peers in
``bench/e2e/peers.py``, in interleaved rounds within one run (peer and Keel
alternate; the medians are compared), and prints each ratio next to the
issue's target:

- ``GET /live`` against the bare FastAPI GET (target ≥ 0.8×);
- authenticated ``GET /v1/recognitions?limit=20`` against the CRUD peer's list
  (≥ 0.5×);
- keyed ``POST /v1/recognitions`` — authentication, limits (lifted for the
  bench principal, still evaluated), idempotency, audit — against the CRUD
  peer's insert of one row (≥ 0.4×);
- p99 of keyed POSTs sent open-loop at 70 % of Keel's own measured POST
  capacity (≤ 300 ms);

on PostgreSQL with 1 and 2 workers and on SQLite with 1. Keel runs with its
serving defaults and observability on (request logs, metrics, tracing).
Closed-loop throughput comes from ``wrk``; the open-loop run is
:mod:`openloop` (latency from each request's scheduled time, so a slow answer
cannot hold back the next request: no coordinated omission).

Run: ``make bench`` or ``python bench/e2e/run.py [--quick] [--json PATH]
[--backend sqlite|postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(HERE)]

from openloop import OpenLoopResult, open_loop  # noqa: E402
from peers import create_peer_schema  # noqa: E402
from tests.support.app import seeded_world  # noqa: E402
from tests.support.databases import Templates, empty_database, fresh_database  # noqa: E402
from tests.support.policies import shipped_policy_with_ip_limits_lifted  # noqa: E402
from tests.support.processes import (  # noqa: E402
    free_port,
    run_keel,
    server_env,
    start_server,
)

TARGETS = {"live": 0.8, "list": 0.5, "post": 0.4}
P99_TARGET_MS = 300.0
OPEN_LOOP_SHARE = 0.7
# Per-user and per-organisation limits the bench principal has lifted (override 0):
# still looked up and evaluated on every request, never refusing one.
LIFTED = ("api-user", "api-org", "recognitions-daily")
CONFIGS = (("postgres", 1), ("postgres", 2), ("sqlite", 1))
BODY_TEMPLATE = '{{"recipient_id": "{recipient}", "message": "thanks for the review"}}'


@dataclass
class Cell:
    """One comparison: Keel's request against its peer's, throughput per round."""

    what: str
    keel: list[float] = field(default_factory=list)
    peer: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.keel) / statistics.median(self.peer)


@dataclass
class Wrk:
    """A wrk run's throughput, and whether every answer was a success."""

    rps: float
    failures: int
    refusals: str


def wrk(url: str, seconds: float, script: Path, env: dict[str, str], connections: int) -> Wrk:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "30s"]
    command += ["-s", str(script), url]
    done = subprocess.run(
        command,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk printed no throughput:\n{out}")
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*timeout (\d+)", out)
    failures = (int(failed.group(1)) if failed else 0) + (int(errors.group(1)) if errors else 0)
    return Wrk(float(rps.group(1)), failures, done.stderr.strip())


@dataclass
class Peer:
    """A peer's uvicorn process this script started (stopped by its pid)."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)


def start_peer(kind: str, workers: int, workdir: Path, database_url: str = "") -> Peer:
    port = free_port()
    log = (workdir / f"peer-{kind}-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "peers.py"), kind, f"--port={port}", f"--workers={workers}"],
        env={**os.environ, "PEER_DATABASE_URL": database_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    probe = url + ("/hello" if kind == "bare" else "/recognitions?limit=1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"peer {kind} exited early; see {log.name}")
        try:
            if httpx.get(probe, timeout=2).status_code == 200:
                return Peer(process, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    Peer(process, url).stop()
    raise RuntimeError(f"peer {kind} did not start; see {log.name}")


@dataclass
class Setup:
    """The processes and credentials of one configuration (database, workers)."""

    keel: str
    bare: str
    crud: str
    token: str
    body: str


def prepare(
    stack: ExitStack, templates: Templates, backend: str, workers: int, workdir: Path
) -> Setup:
    """Fresh databases for Keel and the CRUD peer, the limits lifted, all three servers up."""
    keel_url = stack.enter_context(fresh_database(templates, backend, workdir))
    peer_url = stack.enter_context(empty_database(backend, workdir))
    asyncio.run(create_peer_schema(peer_url))
    world = seeded_world(keel_url)
    policy = shipped_policy_with_ip_limits_lifted(workdir)
    env = server_env(
        keel_url,
        workdir,
        {
            "KEEL_RATELIMIT_POLICY": str(policy),
            # The bench principal is the only caller: per-user concurrency is lifted too.
            "KEEL_CONCURRENCY_PER_USER": "100000",
            "KEEL_CONCURRENCY_PER_ORG": "100000",
            "KEEL_SHED_MAX_IN_FLIGHT": "100000",
        },
    )
    for name in LIFTED:
        run_keel(["limits", "set-override", world.alice.org_id, name, "0"], env, workdir)
    keel = start_server(env, workdir, workers=workers, name=f"keel-{backend}-{workers}")
    stack.callback(keel.stop)
    bare = start_peer("bare", workers, workdir)
    stack.callback(bare.stop)
    crud = start_peer("crud", workers, workdir, peer_url)
    stack.callback(crud.stop)
    body = BODY_TEMPLATE.format(recipient=world.bob.id)
    auth = {"Authorization": f"Bearer {world.alice.token}", "Content-Type": "application/json"}
    for _ in range(30):  # a full first page for both lists
        keyed = {**auth, "Idempotency-Key": uuid.uuid4().hex}
        for url, headers in (
            (f"{keel.url}/v1/recognitions", keyed),
            (f"{crud.url}/recognitions", auth),
        ):
            seeded = httpx.post(url, content=body, headers=headers)
            if seeded.status_code != 201:
                raise RuntimeError(f"seeding {url}: {seeded.status_code} {seeded.text}")
    return Setup(keel.url, bare.url, crud.url, world.alice.token, body)


def measure(setup: Setup, rounds: int, seconds: float, connections: int) -> dict[str, Cell]:
    """Interleaved rounds: each comparison's peer and Keel back to back, order alternating."""
    get, post = HERE / "get.lua", HERE / "post.lua"
    token = {"BENCH_TOKEN": setup.token}
    pairs = {
        "live": (
            (f"{setup.keel}/live", get, {}),
            (f"{setup.bare}/hello", get, {}),
        ),
        "list": (
            (f"{setup.keel}/v1/recognitions?limit=20", get, token),
            (f"{setup.crud}/recognitions?limit=20", get, {}),
        ),
        "post": (
            (f"{setup.keel}/v1/recognitions", post, {**token, "BENCH_KEYED": "1"}),
            (f"{setup.crud}/recognitions", post, {}),
        ),
    }
    cells = {what: Cell(what) for what in pairs}
    for index in range(rounds):
        for what, (keel, peer) in pairs.items():
            order = [("keel", keel), ("peer", peer)]
            for side, (url, script, extra) in order if index % 2 == 0 else reversed(order):
                env = {"BENCH_BODY": setup.body, "BENCH_NONCE": uuid.uuid4().hex, **extra}
                result = wrk(url, seconds, script, env, connections)
                if result.failures:
                    raise RuntimeError(
                        f"{side} {what}: {result.failures} failed ({url}): {result.refusals}"
                    )
                getattr(cells[what], side).append(result.rps)
    return cells


def open_loop_post(setup: Setup, capacity: float, seconds: float) -> OpenLoopResult:
    rate = capacity * OPEN_LOOP_SHARE
    headers = {"Authorization": f"Bearer {setup.token}", "Content-Type": "application/json"}
    return asyncio.run(
        open_loop(f"{setup.keel}/v1/recognitions", rate, seconds, setup.body, headers)
    )


def configurations(backend: str | None) -> tuple[tuple[str, int], ...]:
    """``CONFIGS``, or those of one database (``--backend``)."""
    return tuple(config for config in CONFIGS if backend in (None, config[0]))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 2 s per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--open-seconds",
        type=float,
        default=20.0,
        help="length of the open-loop run (--quick: 2 s): a stall of a second needs a run "
        "of tens of seconds before its share of the requests says anything about p99",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--backend", choices=("postgres", "sqlite"), help="only this database's configurations"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk; `make bench` does it)")
    rounds, seconds = (1, 2) if args.quick else (args.rounds, args.seconds)
    open_seconds = 2.0 if args.quick else args.open_seconds
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    print(f"# keel end-to-end bench, {started:%Y-%m-%d %H:%M} UTC, load {load_before[0]:.2f}")
    print(f"# wrk -t2 -c{args.connections}, {rounds} round(s) × {seconds:g} s per cell")
    report: dict[str, object] = {"date": started.isoformat(), "rounds": rounds, "seconds": seconds}
    unmet = 0
    workdir = Path(tempfile.mkdtemp(prefix="keel-e2e-"))
    templates = Templates(workdir)
    try:
        for backend, workers in configurations(args.backend):
            label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}"
            with ExitStack() as stack:
                setup = prepare(stack, templates, backend, workers, workdir)
                cells = measure(setup, rounds, seconds, args.connections)
                capacity = statistics.median(cells["post"].keel)
                latency = open_loop_post(setup, capacity, open_seconds)
            print(f"\n## {label}")
            figures: dict[str, object] = {}
            for what, cell in cells.items():
                met = cell.ratio >= TARGETS[what]
                unmet += not met
                keel, peer = statistics.median(cell.keel), statistics.median(cell.peer)
                print(
                    f"{what:5} keel {keel:8.0f} req/s  peer {peer:8.0f} req/s  "
                    f"ratio {cell.ratio:5.2f} (target ≥ {TARGETS[what]}) {verdict(met)}"
                )
                figures[what] = {"keel": cell.keel, "peer": cell.peer, "ratio": cell.ratio}
            met = latency.p99_ms <= P99_TARGET_MS and latency.failures == 0
            unmet += not met
            print(
                f"open  keyed POST at {latency.rate:.0f} req/s (70 % of {capacity:.0f}) for "
                f"{open_seconds:g} s: p50 {latency.p50_ms:.1f} ms p99 {latency.p99_ms:.1f} ms "
                f"max {latency.max_ms:.1f} ms, {latency.failures} failed; driver late p99 "
                f"{latency.late_p99_ms:.1f} ms at {latency.driver_cpu_share:.0%} of a core "
                f"(target p99 ≤ {P99_TARGET_MS:g} ms) {verdict(met)}"
            )
            figures["open_loop"] = latency.as_dict()
            report[label] = figures
    finally:
        templates.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    report["load"] = {"before": load_before, "after": load_after}
    print(f"\n# load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"# {unmet} target(s) not met")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
