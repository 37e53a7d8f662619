"""Benchmark: what an Idempotency-Key costs, on PostgreSQL.

Compares, in one run and against one database:

- a **replay** (``POST /v1/recognitions`` with a completed key) vs a plain
  ``GET /v1/recognitions/{id}`` — target: replay ≤ 1.2× GET;
- a **first keyed POST** (a fresh key each time, idempotency on) vs the same
  ``POST`` unkeyed with idempotency **off** (the middleware not installed) —
  target: ≤ 1.3×.

Requests go through the full ASGI stack in-process (httpx.ASGITransport), one
at a time, so the figures are per-request latency without network noise.
Each round sends the cases interleaved (GET, replay, keyed, unkeyed, GET, …)
so load from other processes falls on all of them alike; the report gives the
median of the per-round medians.

    .venv/bin/python bench/bench_idempotency.py [--rounds 7] [--requests 300] > log
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
from bench_support import unlimited_policy
from fastapi import FastAPI

from keel import migrations
from keel.app import create_app
from keel.db.engine import Database
from keel.domain import orgs
from keel.domain.tokens import issue_token
from keel.settings import Settings

PG = "127.0.0.1:5432"
SECRET = "bench-secret-that-is-long-enough-0123456789"


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(f"postgresql://postgres@{PG}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _settings(url: str, storage: str, *, enabled: bool) -> Settings:
    return Settings.model_validate(
        {
            "database_url": url,
            "ratelimit_policy": str(unlimited_policy(storage)),
            "secret_key": SECRET,
            "storage_dir": storage,
            "auth_cache_seconds": 60,
            "idempotency_enabled": enabled,
            "idempotency_required_routes": ["POST /v1/recognitions"] if enabled else [],
        }
    )


async def _seed(url: str) -> tuple[str, str]:
    database = Database(url)
    try:
        await migrations.upgrade(database)
        async with database.write() as session:
            org = await orgs.create_org(session, "Bench", plan="enterprise")
            giver = await orgs.create_user(session, org.id, "giver@bench.test")
            recipient = await orgs.create_user(session, org.id, "recipient@bench.test")
            issued = await issue_token(session, SECRET.encode(), giver.id)
        return issued.token, recipient.id
    finally:
        await database.dispose()


Case = tuple[str, Callable[[int], Awaitable[httpx.Response]], int]


async def _round(cases: list[Case], count: int) -> dict[str, float]:
    """``count`` requests of every case, interleaved (one of each in turn), so a change
    in the machine's load during the round falls on all cases alike; the medians."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for index in range(count):
        for name, call, expect in cases:
            start = time.perf_counter()
            response = await call(index)
            samples[name].append(time.perf_counter() - start)
            if response.status_code != expect:
                raise RuntimeError(
                    f"{name}: expected {expect}, got {response.status_code}: {response.text}"
                )
    return {name: statistics.median(values) for name, values in samples.items()}


async def bench(rounds: int, requests: int) -> dict[str, list[float]]:
    name = f"keel_bench_idem_{os.getpid()}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@{PG}/{name}"
    results: dict[str, list[float]] = {
        "get": [],
        "replay": [],
        "keyed_post": [],
        "unkeyed_post": [],
    }
    try:
        token, recipient = await _seed(url)
        auth = {"Authorization": f"Bearer {token}"}
        body = {"recipient_id": recipient, "message": "benchmark"}
        with tempfile.TemporaryDirectory() as storage:
            on: FastAPI = create_app(_settings(url, storage, enabled=True))
            off: FastAPI = create_app(_settings(url, storage, enabled=False))
            async with on.router.lifespan_context(on), off.router.lifespan_context(off):
                t_on = httpx.ASGITransport(app=on)
                t_off = httpx.ASGITransport(app=off)
                async with (
                    httpx.AsyncClient(transport=t_on, base_url="http://bench") as client_on,
                    httpx.AsyncClient(transport=t_off, base_url="http://bench") as client_off,
                ):
                    replay_headers = {**auth, "Idempotency-Key": "replayed"}
                    first = await client_on.post(
                        "/v1/recognitions", json=body, headers=replay_headers
                    )
                    recognition = first.json()["id"]

                    def get(_: int) -> Awaitable[httpx.Response]:
                        return client_on.get(f"/v1/recognitions/{recognition}", headers=auth)

                    def replay(_: int) -> Awaitable[httpx.Response]:
                        return client_on.post("/v1/recognitions", json=body, headers=replay_headers)

                    def keyed(_: int) -> Awaitable[httpx.Response]:
                        headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
                        return client_on.post("/v1/recognitions", json=body, headers=headers)

                    def unkeyed(_: int) -> Awaitable[httpx.Response]:
                        return client_off.post("/v1/recognitions", json=body, headers=auth)

                    cases: list[Case] = [
                        ("get", get, 200),
                        ("replay", replay, 201),
                        ("keyed_post", keyed, 201),
                        ("unkeyed_post", unkeyed, 201),
                    ]
                    await _round(cases, 30)  # warm pools, caches, prepared statements
                    for _ in range(rounds):
                        for name, median in (await _round(cases, requests)).items():
                            results[name].append(median)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    results = asyncio.run(bench(args.rounds, args.requests))
    medians = {case: statistics.median(values) * 1000 for case, values in results.items()}
    for case, values in results.items():
        rounds = ", ".join(f"{v * 1000:.2f}" for v in values)
        print(f"{case:>13}: median {medians[case]:.3f} ms  (per-round medians: {rounds})")
    replay_ratio = medians["replay"] / medians["get"]
    post_ratio = medians["keyed_post"] / medians["unkeyed_post"]
    print(f"replay / GET by id          = {replay_ratio:.2f}x (target <= 1.2x)")
    print(f"first keyed POST / unkeyed  = {post_ratio:.2f}x (target <= 1.3x)")
    per_round_replay = [r / g for r, g in zip(results["replay"], results["get"], strict=True)]
    per_round_post = [
        k / u for k, u in zip(results["keyed_post"], results["unkeyed_post"], strict=True)
    ]
    print("per-round replay/GET:", ", ".join(f"{x:.2f}" for x in per_round_replay))
    print("per-round keyed/unkeyed:", ", ".join(f"{x:.2f}" for x in per_round_post))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
