"""The audit chain in a real database: appends, digests, and every kind of tampering.

Tampering is done with raw SQL, as someone with database access would do it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select, text

from keel.audit import AuditEvent, Auditor, EventCode, KeyRing, PublicKeys, Signer, verify
from keel.audit.chain import ChainedEvent
from keel.audit.search import AuditQuery, page
from keel.audit.verify import BreakKind
from keel.db.engine import Database
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.testing import ManualClock

ORG = "0190a000-0000-7000-8000-00000000aaaa"
OTHER_ORG = "0190a000-0000-7000-8000-00000000bbbb"
USER = "0190a000-0000-7000-8000-00000000cccc"
RING = KeyRing.parse("k1:" + "s" * 32, None)


def auditor(database: Database, *, every: int = 4, ring: KeyRing = RING) -> Auditor:
    return Auditor(database, ring, SIGNER, digest_every=every, clock=ManualClock())


SIGNER = Signer.generate()
KEYS = PublicKeys([SIGNER.public_key])


async def fill(audit: Auditor, count: int, org: str = ORG) -> None:
    for number in range(count):
        audit.clock.advance(1)  # type: ignore[attr-defined]
        event = AuditEvent(
            EventCode.RECOGNITION_CREATED,
            org_id=org,
            actor_id=USER,
            fields={"recognition_id": f"r{number}", "evidence_count": number},
        )
        async with audit.database.write() as session:
            await audit.record(session, event)


async def sql(database: Database, statement: str, **params: object) -> None:
    async with database.write() as session:
        await session.execute(text(statement), params)


async def chain_of(audit: Auditor, org: str = ORG) -> str:
    async with audit.database.read() as session:
        found = await audit.find_chains(session, org)
    assert len(found) == 1  # one chain per organisation: the Auditor's default
    return found[0]


async def test_a_clean_log_verifies_with_digests_every_n_events(database: Database) -> None:
    audit = auditor(database)
    await fill(audit, 10)
    await fill(audit, 3, org=OTHER_ORG)
    report = await verify(database, KEYS)
    assert report.ok, report.broken
    assert report.chains == 2
    assert report.events == 13
    assert report.digests == 2  # seq 1-4 and 5-8 of the first org's chain
    async with database.write() as session:
        sealed = await audit.seal(session, await chain_of(audit))
    assert sealed is not None
    assert (sealed.first_seq, sealed.last_seq) == (9, 10)
    assert (await verify(database, KEYS)).digests == 3


async def test_hashes_the_database_computes_verify_for_any_field_text(database: Database) -> None:
    # The append hashes in SQL (text around the head's values); verify hashes in Python.
    audit = auditor(database, every=100)
    for number, odd in enumerate(['é "quoted" \\ back', "tab\there", "日本語 ✓", "\u2028"]):
        event = AuditEvent(
            EventCode.RECOGNITION_CREATED,
            org_id=ORG,
            actor_id=USER,
            fields={"recognition_id": odd, "evidence_count": number},
        )
        async with database.write() as session:
            recorded = await audit.record(session, event)
        assert recorded.seq == number + 1
    report = await verify(database, KEYS)
    assert report.ok, report.broken
    assert report.events == 4


async def test_an_event_commits_or_rolls_back_with_its_transaction(database: Database) -> None:
    audit = auditor(database)

    async def failing_write() -> None:
        async with database.write() as session:
            await audit.record(session, AuditEvent(EventCode.ORG_CREATED, org_id=ORG))
            raise RuntimeError("the domain write failed")

    with pytest.raises(RuntimeError):
        await failing_write()
    async with database.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM audit_events"))).scalar() == 0
    await fill(audit, 1)
    assert (await verify(database, KEYS)).ok


async def broken_kind(database: Database) -> tuple[BreakKind, int]:
    report = await verify(database, KEYS)
    assert report.broken is not None, "tampering went undetected"
    return report.broken.kind, report.broken.seq


async def test_editing_a_row_is_detected(database: Database) -> None:
    await fill(auditor(database), 10)
    await sql(
        database, "UPDATE audit_events SET fields = :f WHERE seq = 6", f='{"recognition_id":"x"}'
    )
    assert await broken_kind(database) == (BreakKind.EVENT_HASH_MISMATCH, 6)


async def stored(database: Database) -> list[ChainedEvent]:
    async with database.read() as session:
        rows = (await session.scalars(select(AuditRow).order_by(AuditRow.seq))).all()
    return [ChainedEvent(**{k: getattr(row, k) for k in ChainedEvent.__slots__}) for row in rows]


async def test_editing_a_row_and_its_hash_breaks_the_next_link(database: Database) -> None:
    await fill(auditor(database), 10)
    forged = replace((await stored(database))[5], code="org.created")
    await sql(
        database,
        "UPDATE audit_events SET code = 'org.created', hash = :h WHERE seq = 6",
        h=forged.hash(),
    )
    assert await broken_kind(database) == (BreakKind.PREV_HASH_MISMATCH, 7)


async def test_rewriting_the_whole_tail_fails_on_the_signed_digest(database: Database) -> None:
    await fill(auditor(database), 8)  # digests cover 1-4 and 5-8
    events = await stored(database)
    previous = events[4].prev_hash
    for event in events[4:]:  # a consistent chain from seq 5 on, with an edit at 5
        fields = '{"recognition_id":"forged"}' if event.seq == 5 else event.fields
        new_hash = replace(event, fields=fields, prev_hash=previous).hash()
        await sql(
            database,
            "UPDATE audit_events SET fields = :f, prev_hash = :p, hash = :h WHERE id = :i",
            f=fields,
            p=previous,
            h=new_hash,
            i=event.id,
        )
        previous = new_hash
    await sql(database, "UPDATE audit_chains SET head_hash = :h", h=previous)
    assert await broken_kind(database) == (BreakKind.DIGEST_MISMATCH, 8)


async def test_deleting_a_row_is_detected(database: Database) -> None:
    await fill(auditor(database), 10)
    await sql(database, "DELETE FROM audit_events WHERE seq = 3")
    assert await broken_kind(database) == (BreakKind.SEQUENCE_GAP, 3)


async def test_deleting_the_last_rows_is_detected(database: Database) -> None:
    await fill(auditor(database), 10)
    await sql(database, "DELETE FROM audit_events WHERE seq >= 9")
    assert await broken_kind(database) == (BreakKind.HEAD_MISMATCH, 9)
    await sql(database, "DELETE FROM audit_events WHERE seq >= 7")
    assert await broken_kind(database) == (BreakKind.DIGEST_BEYOND_END, 7)


async def test_inserting_a_row_is_detected(database: Database) -> None:
    await fill(auditor(database), 10)
    # Make room at seq 5 by moving the later rows up, then insert a forged row there.
    await sql(database, "UPDATE audit_events SET seq = seq + 100 WHERE seq >= 5")
    await sql(database, "UPDATE audit_events SET seq = seq - 99 WHERE seq >= 105")
    await sql(
        database,
        "INSERT INTO audit_events (id, chain_id, seq, occurred_at, code, key_id, fields,"
        " prev_hash, hash) SELECT '0190a000-0000-7000-8000-0000000000ff', chain_id, 5,"
        " occurred_at, 'org.created', key_id, '{}', hash, hash FROM audit_events WHERE seq = 4",
    )
    assert await broken_kind(database) == (BreakKind.EVENT_HASH_MISMATCH, 5)


async def test_inserting_a_duplicate_sequence_number_is_refused_by_the_schema(
    database: Database,
) -> None:
    await fill(auditor(database), 3)
    with pytest.raises(Exception, match=r"(?i)unique"):
        await sql(
            database,
            "INSERT INTO audit_events (id, chain_id, seq, occurred_at, code, key_id, fields,"
            " prev_hash, hash) SELECT '0190a000-0000-7000-8000-0000000000fe', chain_id, seq,"
            " occurred_at, code, key_id, fields, prev_hash, hash FROM audit_events WHERE seq = 2",
        )


async def test_reordering_rows_is_detected(database: Database) -> None:
    await fill(auditor(database), 10)
    await sql(database, "UPDATE audit_events SET seq = 1000 WHERE seq = 3")
    await sql(database, "UPDATE audit_events SET seq = 3 WHERE seq = 4")
    await sql(database, "UPDATE audit_events SET seq = 4 WHERE seq = 1000")
    assert await broken_kind(database) == (BreakKind.EVENT_HASH_MISMATCH, 3)


async def test_a_bad_digest_signature_is_detected(database: Database) -> None:
    await fill(auditor(database), 8)
    await sql(database, "UPDATE audit_digests SET signature = :s WHERE last_seq = 8", s="00" * 64)
    assert await broken_kind(database) == (BreakKind.DIGEST_SIGNATURE_INVALID, 8)


async def test_a_deleted_digest_is_detected(database: Database) -> None:
    await fill(auditor(database), 8)
    await sql(database, "DELETE FROM audit_digests WHERE last_seq = 4")
    assert await broken_kind(database) == (BreakKind.DIGEST_CHAIN_BROKEN, 8)
    await sql(database, "DELETE FROM audit_digests")
    assert await broken_kind(database) == (BreakKind.DIGEST_CHAIN_BROKEN, 1)


async def test_digests_from_an_untrusted_key_are_refused(database: Database) -> None:
    await fill(auditor(database), 4)
    report = await verify(database, PublicKeys([Signer.generate().public_key]))
    assert report.broken is not None
    assert report.broken.kind is BreakKind.DIGEST_UNKNOWN_KEY


async def test_key_rotation_keeps_chains_verifiable_and_users_searchable(
    database: Database,
) -> None:
    await fill(auditor(database), 3)
    rotated = KeyRing.parse("k1:" + "s" * 32 + ",k2:" + "t" * 32, "k2")
    audit = auditor(database, ring=rotated)
    await fill(audit, 3)
    assert (await verify(database, KEYS)).ok
    async with database.read() as session:
        key_ids = [
            r[0]
            for r in await session.execute(text("SELECT key_id FROM audit_events ORDER BY seq"))
        ]
        chains = (await session.execute(text("SELECT count(*) FROM audit_chains"))).scalar()
    assert key_ids == ["k1"] * 3 + ["k2"] * 3
    assert chains == 1  # the organisation keeps the chain it was born with
    rows, _ = await page(database, rotated, AuditQuery(org_id=ORG, user_id=USER), limit=50)
    assert len(rows) == 6
    only_new, _ = await page(
        database, KeyRing.parse("k2:" + "t" * 32, None), AuditQuery(user_id=USER), limit=50
    )
    assert len(only_new) == 3
