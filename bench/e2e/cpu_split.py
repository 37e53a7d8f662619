"""Server CPU per request of Keel's keyed and unkeyed POST, and of the CRUD peer's insert.

For the work on the write path (issue 19): with the server saturated, req/s
swings with the machine's load, but the CPU a request costs its server moves
much less, and on a CPU-bound server the ratio of CPU per request is the ratio
the throughput converges to. This runs, interleaved round by round, one
``keel serve`` (limits lifted but evaluated) under ``wrk`` with keyed
``POST /v1/recognitions`` (the full layer), the same POST without an
Idempotency-Key (what the idempotency layer costs is the difference) and the
CRUD peer's insert on the same database server, and prints each one's server
CPU per request (user + system time of the server's process session, from
``/proc``) and req/s.

Why CPU and not a profile: py-spy counts a thread that was preempted inside a
system call as busy, so on two shared cores a profile of ``keel serve`` puts
about a third of its samples in the socket ``write`` to PostgreSQL, which the
process's own CPU time (mostly user time) does not show (``bench/RESULTS.md``).

Run: ``python bench/e2e/cpu_split.py [--backend postgres|sqlite] [--workers 1]
[--rounds 3] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from before_after import serve
from peers import create_peer_schema
from run import HERE, start_peer, wrk
from tests.support.databases import empty_database
from write_path import session_cpu_seconds

SIDES = ("keyed", "unkeyed", "peer")


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(
        f"# server CPU per POST, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"load {os.getloadavg()[0]:.2f}; {args.backend}, {args.workers} worker(s); "
        f"{args.rounds} rounds × {args.seconds:g} s, -c{args.connections}"
    )
    post = HERE / "post.lua"
    rps: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    with (
        tempfile.TemporaryDirectory(prefix="keel-cpu-split-", ignore_cleanup_errors=True) as tmp,
        ExitStack() as stack,
    ):
        workdir = Path(tmp)
        keel = serve(stack, args.backend, HERE.parent.parent, workdir, workers=args.workers)
        peer_url = stack.enter_context(empty_database(args.backend, workdir))
        asyncio.run(create_peer_schema(peer_url))
        peer = start_peer("crud", args.workers, workdir, peer_url)
        stack.callback(peer.stop)
        for index in range(args.rounds):
            for side in SIDES[index % 3 :] + SIDES[: index % 3]:
                env = {"BENCH_NONCE": uuid.uuid4().hex, "BENCH_BODY": keel.body}
                if side == "peer":
                    url, session = f"{peer.url}/recognitions", os.getsid(peer.process.pid)
                else:
                    url, session = f"{keel.url}/v1/recognitions", os.getsid(keel.pid)
                    env |= {"BENCH_TOKEN": keel.token, "BENCH_KEYED": "1" * (side == "keyed")}
                spent = session_cpu_seconds(session)
                result = wrk(url, args.seconds, post, env, args.connections)
                spent = session_cpu_seconds(session) - spent
                if result.failures:
                    raise RuntimeError(f"{side}: {result.failures} failed ({result.refusals})")
                rps[side].append(result.rps)
                cpu[side].append(spent / (result.rps * args.seconds) * 1e6)
    peer_cpu = statistics.median(cpu["peer"])
    for side in SIDES:
        median = statistics.median(cpu[side])
        rounds = ", ".join(f"{value:.0f}" for value in cpu[side])
        print(
            f"{side:8} {median:7.0f} µs CPU/request  {median / peer_cpu:5.2f}× the peer's  "
            f"{statistics.median(rps[side]):7.1f} req/s  (rounds {rounds} µs)"
        )
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
