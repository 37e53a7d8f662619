"""Server CPU per keyed POST of several Keel trees and the CRUD peer, on pinned cores.

For A/B comparisons of a change to the write path (issue 19) on this noisy
2-core machine: each tree's ``keel serve`` (1 worker, limits lifted but
evaluated) and the CRUD peer run on CPU 0, PostgreSQL's processes and ``wrk``
on CPU 1, so the server is not preempted by the database it waits for (which
also makes ``py-spy`` honest: ``bench/RESULTS.md``). Interleaved rounds, order
rotating, one warm-up round; it prints each side's server CPU per request
(user + system time of its process session, from ``/proc``), req/s, and the CPU
of the PostgreSQL backends serving that side's database per request.

The affinity of PostgreSQL's processes is restored at the end. Run from the
repository root::

    python bench/e2e/pinned_ab.py TREE [TREE ...] [--backend sqlite] [--rounds 3]
        [--seconds 4] [--no-peer]

(a TREE is a checkout: a git worktree of the revision to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from before_after import serve
from peers import create_peer_schema
from run import HERE, start_peer
from tests.support.databases import empty_database
from write_path import TICKS, session_cpu_seconds

SERVER_CPUS = {0}
LOAD_CPUS = {1}


@dataclass
class Side:
    url: str
    session: int
    env: dict[str, str]
    cpu: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    database_cpu: list[float] = field(default_factory=list)


def session_pids(session: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def postgres_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "postgres"], check=False, capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of each process onto ``cpus`` (gone processes are skipped)."""
    for pid in pids:
        try:
            threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for thread in threads:
            try:
                os.sched_setaffinity(thread, cpus)
            except OSError:
                continue


def database_cpu_seconds(marker: str) -> float:
    """CPU of the PostgreSQL backends whose title names a database of this run."""
    total = 0
    for pid in postgres_pids():
        try:
            if marker not in Path(f"/proc/{pid}/cmdline").read_text():
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def wrk_count(url: str, seconds: int, env: dict[str, str]) -> int:
    """Requests ``wrk`` (pinned to the load CPU) completed; refuses a run with failures."""
    command = ["wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(HERE / "post.lua"), url]
    done = subprocess.run(
        ["taskset", "-c", ",".join(map(str, LOAD_CPUS)), *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
    if failed:
        raise RuntimeError(f"{url}: {failed.group(1)} failed: {done.stderr.strip()}")
    found = re.search(r"(\d+) requests in", done.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no count:\n{done.stdout}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        sys.exit("needs two CPUs to pin to")
    print(f"# load average {os.getloadavg()[0]:.2f}; {args.backend}; {args.rounds} rounds")
    saved = {pid: os.sched_getaffinity(pid) for pid in postgres_pids()}
    marker = f"keel_e_{os.getpid()}_"  # the databases empty_database makes for this run
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            workdir = Path(tmp)
            sides: dict[str, Side] = {}
            body = ""
            for index, tree in enumerate(args.trees):
                keel = serve(stack, args.backend, tree.resolve(), workdir)
                body = keel.body
                sides[f"{index}:{tree.name}"] = Side(
                    f"{keel.url}/v1/recognitions",
                    os.getsid(keel.pid),
                    {"BENCH_TOKEN": keel.token, "BENCH_KEYED": "1", "BENCH_BODY": body},
                )
            if not args.no_peer:
                peer_url = stack.enter_context(empty_database(args.backend, workdir))
                asyncio.run(create_peer_schema(peer_url))
                peer = start_peer("crud", 1, workdir, peer_url)
                stack.callback(peer.stop)
                sides["peer"] = Side(
                    f"{peer.url}/recognitions",
                    os.getsid(peer.process.pid),
                    {"BENCH_BODY": body},
                )
            for side in sides.values():
                pin(session_pids(side.session), SERVER_CPUS)
            pin(postgres_pids(), LOAD_CPUS)
            names = list(sides)
            for index in range(args.rounds + 1):  # round 0 warms up
                for name in names[index % len(names) :] + names[: index % len(names)]:
                    side = sides[name]
                    env = {**side.env, "BENCH_NONCE": uuid.uuid4().hex}
                    cpu, database = session_cpu_seconds(side.session), database_cpu_seconds(marker)
                    seconds = args.seconds if index else 1
                    count = wrk_count(side.url, seconds, env)
                    if index:
                        side.cpu.append((session_cpu_seconds(side.session) - cpu) / count * 1e6)
                        side.rps.append(count / seconds)
                        side.database_cpu.append(
                            (database_cpu_seconds(marker) - database) / count * 1e6
                        )
            base = statistics.median(sides["peer"].cpu) if "peer" in sides else None
            for name, side in sides.items():
                median = statistics.median(side.cpu)
                against = "" if base is None else f"{median / base:5.2f}× the peer's  "
                # The peer's pool replaces its connections, so its backends' CPU is not seen.
                spent = statistics.median(side.database_cpu)
                database = "  n/a" if name == "peer" else f"{spent:5.0f}"
                print(
                    f"{name:24} {median:6.0f} µs CPU/request  {against}"
                    f"{statistics.median(side.rps):7.1f} req/s  "
                    f"database {database} µs/request  "
                    f"(rounds {', '.join(f'{value:.0f}' for value in side.cpu)})"
                )
    finally:
        for pid, cpus in saved.items():
            try:
                os.sched_setaffinity(pid, cpus)
            except OSError:
                continue
        pin(postgres_pids(), set(range(os.cpu_count() or 1)))
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
