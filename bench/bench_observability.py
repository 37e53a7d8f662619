"""Throughput of an authenticated GET /v1/recognitions/{id}: observability on vs off.

Two ``keel serve`` processes with the same settings (one worker each, a copy of
the same seeded SQLite database), differing only in ``KEEL_OBSERVE_ENABLED``:
"on" has the trace → metrics middleware, the access log (JSON, to a file),
OpenTelemetry spans for the request and its SQL (``--sampling``, default the
setting's default 0.1; no exporter)
and the request-id/trace-id context; "off" has none of it. Rounds alternate
between the two so both see the same machine noise; the report gives each
round's requests per second, the medians and the on/off ratio — and, because
wall-clock throughput on a shared 2-core machine swings with everyone else's
load, also requests per CPU-second of the server process (from ``/proc``),
which such noise disturbs far less.

    .venv/bin/python bench/bench_observability.py --rounds 5 --seconds 8 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_support import unlimited_policy

from keel import migrations
from keel.db.engine import Database
from keel.domain import orgs, recognitions
from keel.domain.principal import Plan, Principal, Role
from keel.domain.tokens import issue_token
from keel.testing import ManualClock

SECRET = "bench-secret-that-is-long-enough-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed(url: str) -> tuple[str, str]:
    database = Database(url)
    try:
        await migrations.upgrade(database)
        async with database.write() as session:
            org = await orgs.create_org(session, "Bench", plan="team")
            giver = await orgs.create_user(session, org.id, "giver@bench.test")
            recipient = await orgs.create_user(session, org.id, "recipient@bench.test")
            issued = await issue_token(session, SECRET.encode(), recipient.id)
            principal = Principal(giver.id, org.id, Role.MEMBER, "bench", Plan.TEAM)
            record = await recognitions.create(
                session,
                principal,
                recognitions.NewRecognition(recipient_id=recipient.id, message="fast"),
                clock=ManualClock(),
            )
    finally:
        await database.dispose()
    return issued.token, record.id


def start(
    workdir: Path, database: Path, observe: bool, sampling: float
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    policy = unlimited_policy(workdir)
    env = {
        **os.environ,
        "KEEL_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "KEEL_SECRET_KEY": SECRET,
        "KEEL_STORAGE_DIR": str(workdir / "blobs"),
        "KEEL_LOG_FORMAT": "json",
        "KEEL_OBSERVE_ENABLED": "true" if observe else "false",
        "KEEL_OTEL_SAMPLING_RATIO": str(sampling),
        "KEEL_AUTH_CACHE_SECONDS": "5",
        "KEEL_SHUTDOWN_DRAIN_SECONDS": "0",
        "KEEL_RATELIMIT_POLICY": str(policy),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (workdir / f"serve-{'on' if observe else 'off'}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("a server did not become ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    base: str, path: str, token: str, seconds: float, concurrency: int
) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    failed = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up
            await client.get(path, headers=headers)
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal done, failed
            for _ in range(1_000_000):
                if time.perf_counter() >= deadline:
                    return
                response = await client.get(path, headers=headers)
                if response.status_code == 200:
                    done += 1
                else:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failed:
        raise SystemExit(f"{failed} requests failed")
    return done / elapsed, done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sampling", type=float, default=0.1, help="KEEL_OTEL_SAMPLING_RATIO")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="keel-bench-observe-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        template = workdir / "seed.db"
        token, recognition_id = asyncio.run(seed(f"sqlite+aiosqlite:///{template}"))
        path = f"/v1/recognitions/{recognition_id}"
        bases = {}
        pids = {}
        for label, observe in (("on", True), ("off", False)):
            copy = workdir / f"{label}.db"
            shutil.copyfile(template, copy)
            process, base = start(workdir, copy, observe, args.sampling)
            processes.append(process)
            bases[label] = base
            pids[label] = process.pid
        results: dict[str, list[float]] = {"on": [], "off": []}
        per_cpu: dict[str, list[float]] = {"on": [], "off": []}
        for round_number in range(args.rounds):
            order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
            for label in order:
                cpu_before = cpu_seconds(pids[label])
                rate, count = asyncio.run(
                    measure(bases[label], path, token, args.seconds, args.concurrency)
                )
                results[label].append(rate)
                per_cpu[label].append(count / (cpu_seconds(pids[label]) - cpu_before))
            print(
                f"round {round_number + 1}: on {results['on'][-1]:.0f} req/s "
                f"({per_cpu['on'][-1]:.0f} per server CPU-s), "
                f"off {results['off'][-1]:.0f} req/s ({per_cpu['off'][-1]:.0f} per server CPU-s)",
                flush=True,
            )
        on, off = statistics.median(results["on"]), statistics.median(results["off"])
        print(f"median on {on:.0f} req/s, off {off:.0f} req/s, ratio {on / off:.3f}")
        per_round = [a / b for a, b in zip(results["on"], results["off"], strict=True)]
        print("per-round ratios: " + ", ".join(f"{ratio:.3f}" for ratio in per_round))
        cpu_on, cpu_off = statistics.median(per_cpu["on"]), statistics.median(per_cpu["off"])
        print(
            f"median requests per server CPU-second: on {cpu_on:.0f}, off {cpu_off:.0f}, "
            f"ratio {cpu_on / cpu_off:.3f}"
        )
        # Each round's on and off run back to back, so their ratio is less exposed to the
        # machine's load drifting between rounds than the ratio of the two medians.
        cpu_rounds = [a / b for a, b in zip(per_cpu["on"], per_cpu["off"], strict=True)]
        print(
            "per-round CPU ratios: "
            + ", ".join(f"{ratio:.3f}" for ratio in cpu_rounds)
            + f" (median {statistics.median(cpu_rounds):.3f})"
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
