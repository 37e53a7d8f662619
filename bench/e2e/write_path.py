"""The keyed write path of two source trees of Keel against the CRUD peer, in one run.

For the work on the write path (issue 19): ``wrk`` throughput of the keyed
``POST /v1/recognitions`` (limits lifted but evaluated) of ``--before`` (a git
ref) and of this tree, and of the CRUD peer's insert, interleaved round by
round (the order rotating), on PostgreSQL with 1 and 2 workers and on SQLite;
and the server CPU time per request of each Keel, read from ``/proc`` (the
whole process session of ``keel serve``: supervisor and workers), which moves
less with the machine's load than req/s does.

Run: ``python bench/e2e/write_path.py --before REF [--rounds 3] [--seconds 5]
[--backend sqlite|postgres]``.
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

from before_after import checkout, serve
from peers import create_peer_schema
from run import HERE, configurations, start_peer, wrk
from tests.support.databases import empty_database

TICKS = os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(session_id: int) -> float:
    """User + system CPU of every live process in the session ``session_id`` leads."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session_id:  # the session id, after state, ppid, pgrp
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git ref of the tree to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--backend", choices=("postgres", "sqlite"), help="only this database's configurations"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed")
    print(
        f"# keyed POST, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.2f}; "
        f"before {args.before}; {args.rounds} rounds × {args.seconds:g} s, -c{args.connections}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="keel-write-path-"))
    post = HERE / "post.lua"
    try:
        with checkout(args.before, workdir) as before:
            trees = {"before": before, "after": HERE.parent.parent}
            for backend, workers in configurations(args.backend):
                with ExitStack() as stack:
                    keels = {
                        name: serve(stack, backend, tree, workdir, workers=workers)
                        for name, tree in trees.items()
                    }
                    peer_url = stack.enter_context(empty_database(backend, workdir))
                    asyncio.run(create_peer_schema(peer_url))
                    peer = start_peer("crud", workers, workdir, peer_url)
                    stack.callback(peer.stop)
                    rps: dict[str, list[float]] = {"before": [], "after": [], "peer": []}
                    cpu: dict[str, list[float]] = {"before": [], "after": []}
                    sides = ["before", "after", "peer"]
                    for index in range(args.rounds):
                        for side in sides[index % 3 :] + sides[: index % 3]:
                            env = {"BENCH_NONCE": uuid.uuid4().hex}
                            if side == "peer":
                                url = f"{peer.url}/recognitions"
                                env["BENCH_BODY"] = keels["after"].body
                                result = wrk(url, args.seconds, post, env, args.connections)
                            else:
                                keel = keels[side]
                                env |= {"BENCH_BODY": keel.body, "BENCH_TOKEN": keel.token}
                                env["BENCH_KEYED"] = "1"
                                spent = session_cpu_seconds(keel.pid)
                                url = f"{keel.url}/v1/recognitions"
                                result = wrk(url, args.seconds, post, env, args.connections)
                                spent = session_cpu_seconds(keel.pid) - spent
                                cpu[side].append(spent / (result.rps * args.seconds) * 1e6)
                            if result.failures:
                                raise RuntimeError(f"{side} {backend}: {result.failures} failed")
                            rps[side].append(result.rps)
                    peer_rps = statistics.median(rps["peer"])
                    for side in ("before", "after"):
                        median = statistics.median(rps[side])
                        print(
                            f"{backend} {workers}w {side:6} {median:7.1f} req/s  "
                            f"peer {peer_rps:7.1f}  ratio {median / peer_rps:5.2f}  "
                            f"server CPU {statistics.median(cpu[side]):7.0f} µs/request  "
                            f"(rounds {', '.join(f'{value:.0f}' for value in rps[side])})"
                        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
