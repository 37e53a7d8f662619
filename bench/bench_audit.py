"""What auditing a domain write costs, and how fast the log verifies.

    .venv/bin/python bench/bench_audit.py [--rounds 5] [--ops 200] [--no-postgres]

For each backend (SQLite file, and PostgreSQL when reachable on 127.0.0.1:5432) it
times the same transaction — create a recognition — without and with
``Auditor.record`` in it, alternating the two in each round so drift hits both,
and reports the median per-transaction time of each and their ratio. Then it
times ``verify`` over everything written. Baselines are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from keel import migrations
from keel.audit import AuditEvent, Auditor, EventCode, KeyRing, PublicKeys, Signer, verify
from keel.db.engine import Database
from keel.domain import orgs, recognitions
from keel.domain.principal import Plan, Principal, Role

RING = KeyRing.parse("bench:" + "k" * 32, None)


async def _setup(database: Database) -> tuple[Principal, str]:
    await migrations.upgrade(database)
    async with database.write() as session:
        org = await orgs.create_org(session, "Bench")
        giver = await orgs.create_user(session, org.id, "giver@bench.test")
        recipient = await orgs.create_user(session, org.id, "recipient@bench.test")
    principal = Principal(
        giver.id, org.id, Role.MEMBER, "0190a000-0000-7000-8000-000000000000", Plan.FREE
    )
    return principal, recipient.id


async def audited_write(
    database: Database, principal: Principal, recipient: str, audit: Auditor | None
) -> None:
    """One transaction: create a recognition, then (with ``audit``) its audit event last."""
    new = recognitions.NewRecognition(recipient_id=recipient, message="thanks")
    async with database.write() as session:
        record = await recognitions.create(session, principal, new)
        if audit is not None:
            event = AuditEvent(
                EventCode.RECOGNITION_CREATED,
                org_id=principal.org_id,
                actor_id=principal.user_id,
                subject_id=recipient,
                token_id=principal.token_id,
                ip="127.0.0.1",
                fields={"recognition_id": record.id, "evidence_count": 0},
            )
            await audit.record(session, event)


async def _ops(
    database: Database, principal: Principal, recipient: str, ops: int, audit: Auditor | None
) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        await audited_write(database, principal, recipient, audit)
    return (time.perf_counter() - started) / ops


async def run_backend(name: str, url: str, rounds: int, ops: int) -> None:
    database = Database(url)
    signer = Signer.generate()
    audit = Auditor(database, RING, signer, digest_every=100)
    try:
        principal, recipient = await _setup(database)
        plain, audited = [], []
        for _ in range(rounds):
            plain.append(await _ops(database, principal, recipient, ops, None))
            audited.append(await _ops(database, principal, recipient, ops, audit))
        started = time.perf_counter()
        report = await verify(database, PublicKeys([signer.public_key]))
        verify_seconds = time.perf_counter() - started
        assert report.ok, report.broken
        p, a = statistics.median(plain), statistics.median(audited)
        print(
            f"{name}: write txn median {p * 1e3:.3f} ms, with audit event {a * 1e3:.3f} ms, "
            f"ratio {a / p:.2f}x (+{(a - p) * 1e3:.3f} ms); "
            f"verify {report.events} events + {report.digests} digests in {verify_seconds:.3f} s "
            f"({report.events / verify_seconds:,.0f} events/s)"
        )
    finally:
        await database.dispose()


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=5432, user="postgres", database="postgres"
    )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite+aiosqlite:///{Path(workdir) / 'bench.db'}"
        await run_backend("sqlite", url, args.rounds, args.ops)
    if args.no_postgres:
        return
    name = f"keel_bench_audit_{os.getpid()}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except OSError:
        print("postgres: not reachable, skipped")
        return
    try:
        await run_backend(
            "postgres",
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
            args.rounds,
            args.ops,
        )
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
