"""Evidence upload and download throughput through a real ``keel serve``: SeaweedFS (S3)
against the local directory store, in the same run, and the server's peak memory while
it streams eight concurrent 25 MB uploads.

Two servers (SQLite each, one worker), identical but for ``KEEL_STORAGE_URL``; rounds
alternate between them so machine noise hits both. Every upload has fresh random bytes
(content addressing would otherwise make a repeat free). Memory: the server process
tree's VmRSS before the burst and VmHWM (peak) after it, from ``/proc``: with one part
(S3) or one 64 KiB chunk (local) in memory per upload it stays far below 8 × 25 MB.

    PYTHONPATH=$PWD/src .venv/bin/python bench/bench_storage.py [--rounds 5] [--part-mib 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "bench")]

from bench_support import unlimited_policy  # noqa: E402
from tests.support.app import Member, seeded_world  # noqa: E402
from tests.support.processes import KeelServer, run_keel, server_env, start_server  # noqa: E402
from tests.support.seaweedfs import seaweedfs_server  # noqa: E402

MB = 1_000_000
SIZES = {"1 MB": 1 * MB, "25 MB": 25 * MB}
CONCURRENT = 8


def tree(pid: int) -> Iterator[int]:
    yield pid
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            yield from tree(int(child))


def memory_kib(pid: int, field: str) -> int:
    total = 0
    for member in tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total


def start(name: str, workdir: Path, extra: dict[str, str]) -> tuple[KeelServer, Member]:
    workdir.mkdir()
    url = f"sqlite+aiosqlite:///{workdir / 'keel.db'}"
    env = server_env(
        url,
        workdir,
        {
            "KEEL_RATELIMIT_POLICY": str(unlimited_policy(workdir)),
            "KEEL_INPROCESS_WORKER": "off",
            "KEEL_SHED_MAX_LOOP_LAG_SECONDS": "60",
            **extra,
        },
    )
    run_keel(["migrate", "upgrade"], env, workdir)
    member = seeded_world(url).alice
    return start_server(env, workdir, name=name), member


async def upload(http: httpx.AsyncClient, server: KeelServer, who: Member, size: int) -> str:
    files = {"file": ("b.bin", os.urandom(size), "application/octet-stream")}
    created = await http.post(f"{server.url}/v1/evidence", files=files, headers=who.headers)
    created.raise_for_status()
    return str(created.json()["id"])


async def measure(
    servers: dict[str, tuple[KeelServer, Member]], rounds: int
) -> dict[str, dict[str, tuple[float, float]]]:
    seconds: dict[tuple[str, str, str], list[float]] = {}
    async with httpx.AsyncClient(timeout=300) as http:
        for label, size in SIZES.items():
            for _ in range(rounds):
                for store, (server, who) in servers.items():
                    began = time.perf_counter()
                    evidence_id = await upload(http, server, who, size)
                    uploaded = time.perf_counter()
                    path = f"{server.url}/v1/evidence/{evidence_id}/content"
                    async with http.stream("GET", path, headers=who.headers) as response:
                        received = sum([len(c) async for c in response.aiter_bytes()])
                    assert received == size, (received, size)
                    done = time.perf_counter()
                    seconds.setdefault((store, label, "up"), []).append(uploaded - began)
                    seconds.setdefault((store, label, "down"), []).append(done - uploaded)
    return {
        store: {
            label: (
                size / MB / statistics.median(seconds[(store, label, "up")]),
                size / MB / statistics.median(seconds[(store, label, "down")]),
            )
            for label, size in SIZES.items()
        }
        for store in servers
    }


async def burst(server: KeelServer, who: Member) -> tuple[int, int]:
    before = memory_kib(server.process.pid, "VmRSS")
    async with httpx.AsyncClient(timeout=300) as http:
        await asyncio.gather(*(upload(http, server, who, 25 * MB) for _ in range(CONCURRENT)))
    return before, memory_kib(server.process.pid, "VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part-mib", type=int, default=8, help="KEEL_STORAGE_S3_PART_SIZE_BYTES")
    args = parser.parse_args()
    part = {"KEEL_STORAGE_S3_PART_SIZE_BYTES": str(args.part_mib * 1024 * 1024)}
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        root = Path(scratch)
        weed = stack.enter_context(seaweedfs_server(root / "seaweedfs"))
        servers = {
            "local": start("local", root / "local", {}),
            "seaweedfs": start("seaweedfs", root / "s3", {**weed.environment("bench"), **part}),
        }
        for server, _ in servers.values():
            stack.callback(server.stop)
        results = asyncio.run(measure(servers, args.rounds))
        print(f"median MB/s over {args.rounds} rounds (upload / download)")
        for label in SIZES:
            local, s3 = results["local"][label], results["seaweedfs"][label]
            print(
                f"  {label:>6}: local {local[0]:7.1f} / {local[1]:7.1f}   "
                f"seaweedfs {s3[0]:7.1f} / {s3[1]:7.1f}   "
                f"ratio {s3[0] / local[0]:.2f} / {s3[1] / local[1]:.2f}"
            )
        print(
            f"server memory, {CONCURRENT} concurrent 25 MB uploads (RSS before -> peak), "
            f"S3 part size {args.part_mib} MiB"
        )
        for store, (server, who) in servers.items():
            before, peak = asyncio.run(burst(server, who))
            print(f"  {store:>9}: {before / 1024:6.1f} MiB -> {peak / 1024:6.1f} MiB")


if __name__ == "__main__":
    main()
