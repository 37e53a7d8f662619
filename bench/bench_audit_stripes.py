"""Concurrent audited writes of ONE organisation on PostgreSQL, by chains per organisation.

    PYTHONPATH=src .venv/bin/python bench/bench_audit_stripes.py [--rounds 3] [--seconds 4]
        [--writers 16] [--chains 1 8]

``--writers`` concurrent transactions, each creating a recognition and appending
its audit event last (what a keyed POST's business transaction does), all in one
organisation, for a fixed time; with each chain count in turn, and without the
audit append (the same write with no chain head at all), interleaved round by
round with the order rotating. Prints commits per second (median of the rounds)
and each one's ratio to the unaudited write: how much of the database's
concurrent commit rate one organisation's audited writes keep. No HTTP and no
server: this isolates the chain head's lock from the rest of the request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from bench_audit import RING, _pg_admin, _setup, audited_write

from keel.audit import Auditor, PublicKeys, Signer, verify
from keel.db.engine import Database
from keel.domain.principal import Principal

UNAUDITED = 0


async def _writer(
    database: Database,
    principal: Principal,
    recipient: str,
    audit: Auditor | None,
    deadline: float,
) -> int:
    done = 0
    while time.perf_counter() < deadline:
        await audited_write(database, principal, recipient, audit)
        done += 1
    return done


async def _round(
    database: Database,
    principal: Principal,
    recipient: str,
    audit: Auditor | None,
    writers: int,
    seconds: float,
) -> float:
    deadline = time.perf_counter() + seconds
    counts = await asyncio.gather(
        *(_writer(database, principal, recipient, audit, deadline) for _ in range(writers))
    )
    return sum(counts) / seconds


async def run(url: str, rounds: int, seconds: float, writers: int, chains: list[int]) -> None:
    database = Database(url, pool_size=writers + 2)
    signer = Signer.generate()
    auditors: dict[int, Auditor | None] = {UNAUDITED: None}
    for count in chains:
        auditors[count] = Auditor(database, RING, signer, digest_every=100, chains_per_org=count)
    try:
        principal, recipient = await _setup(database)
        # Open the organisation's chains first (an auditor with more chains opens the rest).
        for count in sorted(chains):
            audit = auditors[count]
            assert audit is not None
            await audit.start()
            await _round(database, principal, recipient, audit, 2, 0.2)
            await audit.stop()
        rates: dict[int, list[float]] = {count: [] for count in auditors}
        order = list(auditors)
        for index in range(rounds):
            for count in order[index % len(order) :] + order[: index % len(order)]:
                rate = await _round(
                    database, principal, recipient, auditors[count], writers, seconds
                )
                rates[count].append(rate)
        report = await verify(database, PublicKeys([signer.public_key]))
        assert report.ok, report.broken
        base = statistics.median(rates[UNAUDITED])
        for count, values in rates.items():
            name = "no audit" if count == UNAUDITED else f"{count} chain(s)"
            median = statistics.median(values)
            print(
                f"{name:>11}: {median:7.1f} commits/s  ratio {median / base:4.2f}  "
                f"(rounds {', '.join(f'{value:.0f}' for value in values)})"
            )
        print(f"verified {report.chains} chains, {report.events} events")
    finally:
        await database.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    print(
        f"# {args.writers} concurrent writers, one organisation, {args.rounds} rounds × "
        f"{args.seconds:g} s, load {os.getloadavg()[0]:.2f}"
    )
    name = f"keel_bench_stripes_{os.getpid()}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await run(url, args.rounds, args.seconds, args.writers, args.chains)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
