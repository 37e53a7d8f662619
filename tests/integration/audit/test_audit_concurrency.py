"""Two real OS processes appending to one organisation's chain(s) on PostgreSQL."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from tests.support.databases import Templates, fresh_database

from keel.audit import EventCode, PublicKeys, Signer, verify
from keel.audit.signing import write_private_key
from keel.db.engine import Database

pytestmark = pytest.mark.postgres

ORG = "0190a000-0000-7000-8000-00000000dddd"
PER_PROCESS = 60
OPENED = EventCode.AUDIT_CHAINS_OPENED.value
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def postgres_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


def run_workers(postgres_url: str, key_path: Path, *extra: str) -> None:
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.audit_append_worker",
                postgres_url,
                ORG,
                str(PER_PROCESS),
                str(key_path),
                label,
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for label in ("a", "b")
    ]
    for worker in workers:
        try:
            _out, err = worker.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
        assert worker.returncode == 0, err.decode()[-2000:]


async def test_two_processes_append_to_one_chain_without_gaps(
    postgres_url: str, tmp_path: Path
) -> None:
    key_path = tmp_path / "signing.pem"
    write_private_key(key_path, Ed25519PrivateKey.generate())
    run_workers(postgres_url, key_path)
    database = Database(postgres_url)
    try:
        async with database.read() as session:
            seqs = [
                r[0]
                for r in await session.execute(text("SELECT seq FROM audit_events ORDER BY seq"))
            ]
            chains = (await session.execute(text("SELECT count(*) FROM audit_chains"))).scalar()
            labels = [
                r[0]
                for r in await session.execute(text("SELECT fields FROM audit_events ORDER BY seq"))
            ]
        assert chains == 1
        assert seqs == list(range(1, 2 * PER_PROCESS + 1))
        # The two writers really interleaved (not one after the other) most of the time;
        # correctness does not depend on it, so this only reports.
        writers = [json.loads(fields)["limit"][0] for fields in labels]
        switches = sum(1 for x, y in itertools.pairwise(writers) if x != y)
        print(f"writer switches along the chain: {switches}")
        signer = Signer.from_file(key_path, create=False)
        report = await verify(database, PublicKeys([signer.public_key]))
        assert report.ok, report.broken
        assert report.events == 2 * PER_PROCESS
        assert report.digests == (2 * PER_PROCESS) // 7
    finally:
        await database.dispose()


CHAINS = 4
WRITERS = 4


async def test_two_processes_of_concurrent_writers_keep_every_chain_of_one_org_whole(
    postgres_url: str, tmp_path: Path
) -> None:
    key_path = tmp_path / "signing.pem"
    write_private_key(key_path, Ed25519PrivateKey.generate())
    run_workers(postgres_url, key_path, str(CHAINS), str(WRITERS))
    database = Database(postgres_url)
    try:
        async with database.read() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT chain_id, seq, code, fields FROM audit_events"
                        " ORDER BY chain_id, seq"
                    )
                )
            ).all()
            chains = (await session.execute(text("SELECT count(*) FROM audit_chains"))).scalar()
        assert chains == CHAINS
        by_chain: dict[str, list[int]] = {}
        for chain_id, seq, _code, _fields in rows:
            by_chain.setdefault(chain_id, []).append(seq)
        for chain_id, seqs in by_chain.items():  # gap-free, no sequence number twice
            assert seqs == list(range(1, len(seqs) + 1)), chain_id
        written = [json.loads(fields)["limit"] for _c, _s, code, fields in rows if code != OPENED]
        assert sorted(written) == sorted(
            f"{label}-{number}" for label in "ab" for number in range(PER_PROCESS)
        )  # every event once
        assert len(by_chain) > 1  # the writers did spread over the organisation's chains
        print(f"events per chain: {sorted(len(seqs) for seqs in by_chain.values())}")
        signer = Signer.from_file(key_path, create=False)
        report = await verify(database, PublicKeys([signer.public_key]))
        assert report.ok, report.broken
        assert report.chains == CHAINS
        assert report.events == len(rows)
    finally:
        await database.dispose()
