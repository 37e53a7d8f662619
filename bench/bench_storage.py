"""Evidence upload and download throughput through a real ``keel serve``: SeaweedFS (S3)
against the local directory store, in the same run, and the server's peak memory while
it streams eight concurrent 25 MB uploads.

Two servers (SQLite each, one worker), identical but for ``KEEL_STORAGE_URL``; rounds
alternate between them so machine noise hits both. Every upload has fresh random bytes
(content addressing would otherwise make a repeat free). Memory: the server process
tree's VmRSS before the burst and VmHWM (peak) after it, from ``/proc``: with one part
(S3) or one 64 KiB chunk (local) in memory per upload it stays far below 8 × 25 MB.

    PYTHONPATH=$PWD/src .venv/bin/python bench/bench_storage.py [--rounds 5] [--part-mib 8]

``--memory`` measures only the memory, for each file size of ``--sizes-mb`` (default
25 and 100) and each part size of ``--parts-mib`` (default 5 and 8): a server per
part size, its peak reset (``/proc/PID/clear_refs``) before each burst, the uploads
streamed by the client from one random MiB each so the client stays small. Memory
that is flat in the file size grows with concurrency × part size only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
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


async def streamed_upload(
    http: httpx.AsyncClient, server: KeelServer, who: Member, size: int
) -> None:
    """A multipart upload of ``size`` bytes the client never holds: one random MiB,
    repeated (its randomness makes each file's SHA-256 new)."""
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = os.urandom(1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, size, len(block)):
            yield block[: min(len(block), size - start)]
        yield tail

    headers = {
        **who.headers,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    created = await http.post(f"{server.url}/v1/evidence", content=body(), headers=headers)
    if created.status_code != 201:
        raise RuntimeError(f"upload of {size} bytes: {created.status_code} {created.text}")


def reset_peak(pid: int) -> None:
    """Set VmHWM back to the current RSS for the server's process tree."""
    for member in tree(pid):
        Path(f"/proc/{member}/clear_refs").write_text("5")


async def flat_burst(
    server: KeelServer, who: Member, size: int, concurrent: int
) -> tuple[int, int]:
    reset_peak(server.process.pid)
    before = memory_kib(server.process.pid, "VmRSS")
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(streamed_upload(http, server, who, size) for _ in range(concurrent)))
    return before, memory_kib(server.process.pid, "VmHWM")


def memory_only(sizes_mb: list[int], parts_mib: list[int], rounds: int, concurrent: int) -> None:
    biggest = max(sizes_mb) * MB
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        root = Path(scratch)
        weed = stack.enter_context(seaweedfs_server(root / "seaweedfs"))
        # Memory, not speed, is measured: a loaded machine's slow parts must not time out.
        limit = {
            "KEEL_MAX_UPLOAD_BYTES": str(biggest),
            "KEEL_STORAGE_TIMEOUT_SECONDS": "300",
            "KEEL_STORAGE_SLOW_CALL_SECONDS": "300",
        }
        servers = {"local": start("local", root / "local", limit)}
        for part in parts_mib:
            servers[f"s3, {part} MiB parts"] = start(
                f"s3-{part}",
                root / f"s3-{part}",
                {
                    **weed.environment(f"bench-{part}"),
                    **limit,
                    "KEEL_STORAGE_S3_PART_SIZE_BYTES": str(part * 1024 * 1024),
                },
            )
        for server, _ in servers.values():
            stack.callback(server.stop)
        print(
            f"server peak RSS growth, {concurrent} concurrent uploads "
            f"(median of {rounds}; MiB over the RSS before the burst)"
        )
        for name, (server, who) in servers.items():
            asyncio.run(flat_burst(server, who, 1 * MB, concurrent))  # warm: pools, client
            cells = []
            for size in sizes_mb:
                growth = []
                for _ in range(rounds):
                    before, peak = asyncio.run(flat_burst(server, who, size * MB, concurrent))
                    growth.append((peak - before) / 1024)
                cells.append(f"{size} MB: +{statistics.median(growth):6.1f}")
                print(f"  {name:>18}: " + "   ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part-mib", type=int, default=8, help="KEEL_STORAGE_S3_PART_SIZE_BYTES")
    parser.add_argument("--memory", action="store_true", help="measure only the memory")
    parser.add_argument("--sizes-mb", default="25,100", help="file sizes for --memory")
    parser.add_argument("--parts-mib", default="5,8", help="part sizes for --memory")
    parser.add_argument(
        "--concurrent",
        type=int,
        default=CONCURRENT,
        help="uploads at once for --memory (the test SeaweedFS holds about 1 GiB in all)",
    )
    args = parser.parse_args()
    if args.memory:
        memory_only(
            [int(n) for n in args.sizes_mb.split(",")],
            [int(n) for n in args.parts_mib.split(",")],
            args.rounds,
            args.concurrent,
        )
        return
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
