"""Two real OS processes appending to one organisation's chain on PostgreSQL."""

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

from keel.audit import PublicKeys, Signer, verify
from keel.audit.signing import write_private_key
from keel.db.engine import Database

pytestmark = pytest.mark.postgres

ORG = "0190a000-0000-7000-8000-00000000dddd"
PER_PROCESS = 60
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def postgres_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


async def test_two_processes_append_to_one_chain_without_gaps(
    postgres_url: str, tmp_path: Path
) -> None:
    key_path = tmp_path / "signing.pem"
    write_private_key(key_path, Ed25519PrivateKey.generate())
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
