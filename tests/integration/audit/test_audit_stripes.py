"""Several chains per organisation on PostgreSQL: free heads without waiting, and verified.

Concurrent writers of one organisation each take a chain no one holds
(``FOR UPDATE SKIP LOCKED``); only when every chain is held does one queue.
Every chain stays gap-free, linked and signed, and the group is checked as a
whole: a chain deleted whole, or one never opened, is a broken link too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.support.databases import Templates, fresh_database

from keel.audit import (
    AuditEvent,
    Auditor,
    EventCode,
    KeyRing,
    PublicKeys,
    Recorded,
    Signer,
    stripes,
    verify,
)
from keel.audit.chain import GENESIS
from keel.audit.search import AuditQuery, export, page
from keel.audit.verify import BreakKind
from keel.db.engine import Database

pytestmark = pytest.mark.postgres

ORG = "0190a000-0000-7000-8000-00000000aaaa"
USER = "0190a000-0000-7000-8000-00000000cccc"
RING = KeyRing.parse("k1:" + "s" * 32, None)
SIGNER = Signer.generate()
KEYS = PublicKeys([SIGNER.public_key])
CHAINS = 4
BLOCKED = 2.0  # seconds: an append that takes this long is waiting on a lock


@pytest.fixture
def postgres_url(templates: Templates, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url, pool_size=CHAINS + 2)
    try:
        yield database
    finally:
        await database.dispose()


def auditor(database: Database, *, chains: int = CHAINS, every: int = 3) -> Auditor:
    return Auditor(database, RING, SIGNER, digest_every=every, chains_per_org=chains)


def event(number: int) -> AuditEvent:
    return AuditEvent(
        EventCode.RECOGNITION_CREATED,
        org_id=ORG,
        actor_id=USER,
        fields={"recognition_id": f"r{number}", "evidence_count": number},
    )


async def opened(audit: Auditor) -> None:
    """The organisation's chain 0 exists and its other chains are open (a started auditor
    opens them after an append finds them missing; stopping waits for the opener)."""
    await audit.start()
    await audit.record_now(event(0))
    await audit.record_now(event(0))
    await audit.stop()


async def hold_every_chain(audit: Auditor, stack: AsyncExitStack) -> list[Recorded]:
    """``CHAINS`` open transactions, each holding the head its append took until ``stack``
    closes. With one chain the second append would wait for the first transaction's
    commit, which comes only then: an append that waits ``BLOCKED`` fails the test."""
    recorded = []
    for n in range(CHAINS):
        session = await stack.enter_async_context(audit.database.write())
        recorded.append(await asyncio.wait_for(audit.record(session, event(n)), BLOCKED))
    return recorded


async def scalar(database: Database, statement: str) -> object:
    async with database.read() as session:
        return (await session.execute(text(statement))).scalar()


async def test_an_organisation_gets_its_chains_and_chain_0_records_how_many(
    database: Database,
) -> None:
    audit = auditor(database)
    await opened(audit)
    async with database.read() as session:
        chains = await audit.find_chains(session, ORG)
        announced = (
            await session.execute(
                text("SELECT chain_id, fields FROM audit_events WHERE code = :code"),
                {"code": EventCode.AUDIT_CHAINS_OPENED.value},
            )
        ).all()
    base = RING.pseudonym("org", ORG)
    assert chains == sorted(stripes.chain_id(base, n) for n in range(CHAINS))
    assert [(chain, json.loads(fields)) for chain, fields in announced] == [
        (base, {"chains": CHAINS})
    ]
    # A second opener finds every chain there and records nothing.
    assert await audit.open_chains(ORG, base) == []
    report = await verify(database, KEYS)
    assert report.ok, report.broken
    assert (report.chains, report.events) == (CHAINS, 3)


async def test_concurrent_writers_of_one_organisation_take_different_chains_without_waiting(
    database: Database,
) -> None:
    audit = auditor(database)
    await opened(audit)
    async with AsyncExitStack() as stack:
        recorded = await hold_every_chain(audit, stack)
    assert len({r.chain_id for r in recorded}) == CHAINS
    report = await verify(database, KEYS)
    assert report.ok, report.broken


async def test_a_writer_queues_when_every_chain_is_held_and_appends_once_one_is_free(
    database: Database,
) -> None:
    audit = auditor(database)
    await opened(audit)
    async with AsyncExitStack() as stack:
        await hold_every_chain(audit, stack)
        late = asyncio.create_task(audit.record_now(event(99)))
        done, _pending = await asyncio.wait({late}, timeout=0.5)
        assert not done  # every head is held: it waits rather than fail or skip
    recorded = await asyncio.wait_for(late, BLOCKED)  # the holders committed
    report = await verify(database, KEYS)
    assert report.ok, report.broken
    assert report.events == 3 + CHAINS + 1
    assert recorded.seq >= 1


async def test_an_organisation_with_one_chain_from_before_gets_the_others_on_its_next_write(
    database: Database,
) -> None:
    before = auditor(database, chains=1)
    for n in range(5):
        await before.record_now(event(n))
    audit = auditor(database)
    await audit.record_now(event(5))  # not started (a CLI command's): appends, opens nothing
    async with database.read() as session:
        assert len(await audit.find_chains(session, ORG)) == 1
    await audit.start()
    await audit.record_now(event(6))
    await audit.stop()
    async with database.read() as session:
        assert len(await audit.find_chains(session, ORG)) == CHAINS
    report = await verify(database, KEYS)
    assert report.ok, report.broken
    assert report.events == 8  # the five, two more, and audit.chains_opened


async def test_chains_are_opened_with_their_record_or_not_at_all(database: Database) -> None:
    audit = auditor(database)
    nowhere = RING.pseudonym("org", USER)  # no chain 0 to record the new chains on
    with pytest.raises(RuntimeError):
        await audit.open_chains(USER, nowhere)
    assert await scalar(database, "SELECT count(*) FROM audit_chains") == 0


async def test_search_export_and_digest_cover_every_chain_of_the_organisation(
    database: Database,
) -> None:
    audit = auditor(database, every=100)
    await opened(audit)
    async with AsyncExitStack() as stack:
        await hold_every_chain(audit, stack)
    rows, _more = await page(database, RING, AuditQuery(org_id=ORG), limit=100)
    assert len(rows) == 3 + CHAINS
    assert len({row.chain_id for row in rows}) == CHAINS
    lines = [json.loads(line) async for line in export(database, RING, AuditQuery(org_id=ORG))]
    order = [(line["chain_id"], line["seq"]) for line in lines]
    assert order == sorted(order)  # chain by chain, each in seq order
    sealed = [digest.chain_id for digest in await audit.seal_all()]
    assert sorted(sealed) == sorted({row.chain_id for row in rows})
    report = await verify(database, KEYS)
    assert report.ok, report.broken
    assert report.digests == CHAINS


@pytest.fixture
async def spread(database: Database) -> list[str]:
    """Events on every chain of the organisation, sealed every 3 events; the chain ids."""
    audit = auditor(database)
    await opened(audit)
    for _round in range(3):
        async with AsyncExitStack() as stack:
            await hold_every_chain(audit, stack)
    async with database.read() as session:
        return await audit.find_chains(session, ORG)


async def sql(database: Database, statement: str, **params: object) -> None:
    async with database.write() as session:
        await session.execute(text(statement), params)


async def first_break(database: Database, *, org_only: bool = False) -> tuple[str, BreakKind]:
    """The chain and kind of the first broken link (of every chain, or the org's only)."""
    candidates = stripes.every_chain(RING, ORG) if org_only else None
    report = await verify(database, KEYS, candidates=candidates)
    assert report.broken is not None
    return report.broken.chain_id, report.broken.kind


@pytest.mark.parametrize("number", [1, CHAINS - 1])
async def test_an_event_deleted_from_any_chain_is_detected(
    database: Database, spread: list[str], number: int
) -> None:
    chain = stripes.chain_id(stripes.split(spread[0])[0], number)
    await sql(database, "DELETE FROM audit_events WHERE chain_id = :c AND seq = 2", c=chain)
    assert await first_break(database) == (chain, BreakKind.SEQUENCE_GAP)


async def test_an_event_edited_on_a_chain_beyond_0_is_detected(
    database: Database, spread: list[str]
) -> None:
    chain = stripes.chain_id(stripes.split(spread[0])[0], 2)
    await sql(
        database, "UPDATE audit_events SET code = 'token.created' WHERE chain_id = :c", c=chain
    )
    assert await first_break(database, org_only=True) == (chain, BreakKind.EVENT_HASH_MISMATCH)


@pytest.mark.parametrize("number", [1, CHAINS - 1])
async def test_a_whole_chain_deleted_is_detected(
    database: Database, spread: list[str], number: int
) -> None:
    chain = stripes.chain_id(stripes.split(spread[0])[0], number)
    for table in ("audit_events", "audit_digests", "audit_chains"):
        await sql(database, f"DELETE FROM {table} WHERE chain_id = :c", c=chain)
    assert await first_break(database, org_only=True) == (chain, BreakKind.CHAIN_MISSING)


async def test_a_chain_never_opened_is_detected(database: Database, spread: list[str]) -> None:
    chain = stripes.chain_id(stripes.split(spread[0])[0], CHAINS)
    await sql(
        database,
        "INSERT INTO audit_chains SELECT :c, 0, :g, 0, :g, :g, created_at"
        " FROM audit_chains WHERE chain_id = :base",
        c=chain,
        g=GENESIS,
        base=spread[0],
    )
    assert await first_break(database) == (chain, BreakKind.CHAIN_UNANNOUNCED)


async def test_the_chain_count_record_is_itself_chained(
    database: Database, spread: list[str]
) -> None:
    await sql(
        database,
        "UPDATE audit_events SET fields = :f WHERE code = :code",
        f=json.dumps({"chains": CHAINS + 1}),
        code=EventCode.AUDIT_CHAINS_OPENED.value,
    )
    report = await verify(database, KEYS)
    assert report.broken is not None
    assert report.broken.kind is BreakKind.EVENT_HASH_MISMATCH
    assert report.broken.chain_id == spread[0]
