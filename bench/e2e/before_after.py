"""Whole-request speed of two source trees of Keel, measured in one run.

A restructuring must not cost users speed: this script checks out ``--before``
(a git ref) beside the current tree and measures both, interleaved round by
round (the order alternating), so machine noise hits both alike:

- ``wrk`` throughput of the authenticated ``GET /v1/recognitions?limit=20`` and
  of the keyed ``POST /v1/recognitions`` (limits lifted but evaluated), one
  ``keel serve`` worker, on SQLite and on PostgreSQL;
- jobs per second of one real ``keel worker`` on PostgreSQL, finishing a batch
  of no-op jobs (``noop_jobs.py``), timed from the first job's start to the last
  one's finish as the database recorded them, so process start-up is not counted.

Each line prints the medians and the ratio after / before (target ≥ 0.95).

Run: ``python bench/e2e/before_after.py --before REF [--rounds 3] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from run import BODY_TEMPLATE, HERE, LIFTED, ROOT, wrk
from sqlalchemy import text
from tests.support.app import seeded_world
from tests.support.databases import empty_database
from tests.support.policies import shipped_policy_with_ip_limits_lifted
from tests.support.processes import KEEL, run_keel, server_env, start_server

from keel.db.engine import Database
from keel.jobs import Enqueuer, NewJob

TARGET = 0.95
TREES = ("before", "after")


@contextmanager
def checkout(ref: str, workdir: Path) -> Iterator[Path]:
    """``ref`` as a detached git worktree, removed afterwards."""
    path = workdir / "before-tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), ref],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
        )


def tree_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    return {**env, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{HERE}"}


@dataclass
class Server:
    url: str
    token: str
    body: str
    pid: int  # leads the server's process session (supervisor and workers)


def serve(stack: ExitStack, backend: str, tree: Path, workdir: Path, *, workers: int = 1) -> Server:
    """A database migrated by ``tree``'s own migrations (the trees' heads may differ),
    seeded, the bench principal's limits lifted, ``keel serve`` with ``workers`` workers."""
    url = stack.enter_context(empty_database(backend, workdir))
    run_keel(["migrate", "apply"], tree_env(server_env(url, workdir), tree), workdir)
    world = seeded_world(url)
    policy = shipped_policy_with_ip_limits_lifted(workdir)
    lifted = {
        "KEEL_RATELIMIT_POLICY": str(policy),
        "KEEL_CONCURRENCY_PER_USER": "100000",
        "KEEL_CONCURRENCY_PER_ORG": "100000",
        "KEEL_SHED_MAX_IN_FLIGHT": "100000",
    }
    env = tree_env(server_env(url, workdir, lifted), tree)
    for name in LIFTED:
        run_keel(["limits", "set-override", world.alice.org_id, name, "0"], env, workdir)
    server = start_server(env, workdir, workers=workers, name=f"keel-{backend}-{tree.name}")
    stack.callback(server.stop)
    body = BODY_TEMPLATE.format(recipient=world.bob.id)
    headers = {"Authorization": f"Bearer {world.alice.token}", "Content-Type": "application/json"}
    for _ in range(30):  # a full first page to list
        keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
        answer = httpx.post(f"{server.url}/v1/recognitions", content=body, headers=keyed)
        if answer.status_code != 201:
            raise RuntimeError(f"seeding {server.url}: {answer.status_code} {answer.text}")
    return Server(server.url, world.alice.token, body, server.process.pid)


def requests(
    trees: dict[str, Path], rounds: int, seconds: float, workdir: Path
) -> dict[str, dict[str, list[float]]]:
    """wrk throughput per (backend, request) and tree, interleaved."""
    figures: dict[str, dict[str, list[float]]] = {}
    get, post = HERE / "get.lua", HERE / "post.lua"
    for backend in ("sqlite", "postgres"):
        with ExitStack() as stack:
            servers = {name: serve(stack, backend, tree, workdir) for name, tree in trees.items()}
            for index in range(rounds):
                order = TREES if index % 2 == 0 else TREES[::-1]
                for what, path, script, extra in (
                    ("list", "/v1/recognitions?limit=20", get, {}),
                    ("post", "/v1/recognitions", post, {"BENCH_KEYED": "1"}),
                ):
                    for name in order:
                        server = servers[name]
                        env = {
                            "BENCH_BODY": server.body,
                            "BENCH_NONCE": uuid.uuid4().hex,
                            "BENCH_TOKEN": server.token,
                            **extra,
                        }
                        result = wrk(server.url + path, seconds, script, env, 32)
                        if result.failures:
                            raise RuntimeError(f"{name} {backend} {what}: {result.failures} failed")
                        figures.setdefault(f"{what} {backend}", {}).setdefault(name, []).append(
                            result.rps
                        )
    return figures


async def _enqueue(url: str, count: int) -> None:
    database = Database(url)
    try:
        async with database.write() as session:
            await Enqueuer(session).enqueue_many(
                [NewJob("bench.noop", {"n": n}) for n in range(count)]
            )
    finally:
        await database.dispose()


async def _finished(url: str) -> tuple[int, float]:
    """How many bench jobs succeeded, and the span from first start to last finish."""
    database = Database(url)
    try:
        async with database.read() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT count(*), min(started_at), max(finished_at) FROM jobs "
                        "WHERE job_type = 'bench.noop' AND state = 'succeeded'"
                    )
                )
            ).one()
    finally:
        await database.dispose()
    done, first, last = row
    span = (last - first).total_seconds() if done else 0.0
    return int(done), span


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_rate(tree: Path, count: int, workdir: Path) -> tuple[float, float]:
    """Jobs per second of one ``keel worker`` over ``count`` no-op jobs on PostgreSQL,
    and its CPU milliseconds per job (from its first finished job to its last, so
    the start-up's imports are not counted; the polls count against both trees)."""
    with empty_database("postgres", workdir) as url:
        run_keel(["migrate", "apply"], tree_env(server_env(url, workdir), tree), workdir)
        asyncio.run(_enqueue(url, count))
        env = tree_env(
            server_env(
                url, workdir, {"KEEL_JOBS_MODULES": "noop_jobs", "KEEL_WORKER_HTTP_PORT": "0"}
            ),
            tree,
        )
        log = (workdir / f"worker-{tree.name}.log").open("wb")
        process = subprocess.Popen(
            [*KEEL, "worker"],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            first: tuple[int, float] | None = None
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"keel worker exited; see {log.name}")
                cpu = _cpu_seconds(process.pid)
                done, span = asyncio.run(_finished(url))
                if done == count and first is not None and first[0] < count:
                    cpu_per_job = (_cpu_seconds(process.pid) - first[1]) / (count - first[0])
                    return count / span, cpu_per_job * 1000
                if done == count:
                    raise RuntimeError("the worker finished before a first sample: raise --jobs")
                if done and first is None:
                    first = (done, cpu)
                time.sleep(0.2 if first is None else 0.5)
            raise RuntimeError(f"{count} jobs not finished in 300 s; see {log.name}")
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git ref of the tree to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk run")
    parser.add_argument("--jobs", type=int, default=3000, help="no-op jobs per worker round")
    parser.add_argument(
        "--only", choices=("requests", "worker"), help="measure only the requests or the worker"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk; `make bench` does it)")
    started = datetime.now(UTC)
    load = os.getloadavg()[0]
    print(f"# keel before/after, {started:%Y-%m-%d %H:%M} UTC, load {load:.2f}")
    print(f"# before {args.before}, after {ROOT}; {args.rounds} rounds × {args.seconds:g} s")
    workdir = Path(tempfile.mkdtemp(prefix="keel-before-after-"))
    try:
        with checkout(args.before, workdir) as before:
            trees = {"before": before, "after": ROOT}
            figures: dict[str, dict[str, list[float]]] = {}
            if args.only != "worker":
                figures = requests(trees, args.rounds, args.seconds, workdir)
            if args.only != "requests":
                jobs: dict[str, list[float]] = {}
                cpu: dict[str, list[float]] = {}
                for index in range(args.rounds):
                    for name in TREES if index % 2 == 0 else TREES[::-1]:
                        rate, cpu_ms = worker_rate(trees[name], args.jobs, workdir)
                        jobs.setdefault(name, []).append(rate)
                        # Inverted, so that higher is better like every other line.
                        cpu.setdefault(name, []).append(1000 / cpu_ms)
                figures["worker jobs/s postgres"] = jobs
                figures["worker jobs/CPU-s"] = cpu
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for what, sides in figures.items():
        before_median = statistics.median(sides["before"])
        after_median = statistics.median(sides["after"])
        ratio = after_median / before_median
        verdict = "met" if ratio >= TARGET else "NOT met"
        print(
            f"{what:24} before {before_median:8.1f}  after {after_median:8.1f}  "
            f"ratio {ratio:5.2f} (target ≥ {TARGET}) {verdict}"
        )
        rounds = "  ".join(
            f"{name} " + " ".join(f"{value:.0f}" for value in sides[name]) for name in TREES
        )
        print(f"{'':24} rounds: {rounds}")
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
