"""Walking the chains and digests, and naming the first broken link.

For each chain, events are read in ``seq`` order (in batches, so memory stays
flat) and each is checked in turn: its number follows the previous one, its
hash matches its contents, its ``prev_hash`` matches the previous event. A
digest is checked when the walk reaches its last event: signature, range,
end hashes and the link to the digest before it. After the walk, the chain's
head row must point at the last event and the last digest.

What this proves: any edit, deletion, insertion or reordering of events up to
the last digest is detected, even by someone who recomputes every hash,
because they cannot re-sign digests. Events after the last digest (the open
tail) are protected by the chain and the head row only: someone with write
access to the database who rewrites the tail *and* the head row consistently
is caught at the next digest only if that digest was made before the rewrite.
Keep the tail short: ``KEEL_AUDIT_DIGEST_EVERY`` and ``keel audit digest`` on
a schedule.

An organisation's chains (``keel.audit.stripes``) are checked as a group
after each has been walked: its chain 0 records in ``audit.chains_opened``
how many chains it was given, so a group must have exactly chains ``0 .. n -
1`` (``n`` = 1 where none was recorded). A whole chain deleted (events, head
and digests) is therefore caught like a deleted event, as is a chain that was
never opened. Deleting an organisation's every chain is as visible as it was
with one chain per organisation: not at all from the log itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from keel.audit import stripes
from keel.audit.chain import GENESIS, ChainedEvent, DigestBody, digest_hash
from keel.audit.registry import EventCode
from keel.audit.signing import PublicKeys
from keel.db.engine import Database
from keel.db.tables_audit import AuditChain, AuditDigest
from keel.db.tables_audit import AuditEvent as AuditRow

BATCH = 1000


class BreakKind(StrEnum):
    SEQUENCE_GAP = "sequence_gap"
    SEQUENCE_DUPLICATE = "sequence_duplicate"
    EVENT_HASH_MISMATCH = "event_hash_mismatch"
    PREV_HASH_MISMATCH = "prev_hash_mismatch"
    DIGEST_SIGNATURE_INVALID = "digest_signature_invalid"
    DIGEST_UNKNOWN_KEY = "digest_unknown_key"
    DIGEST_MISMATCH = "digest_mismatch"
    DIGEST_CHAIN_BROKEN = "digest_chain_broken"
    DIGEST_BEYOND_END = "digest_beyond_end"
    HEAD_MISMATCH = "head_mismatch"
    CHAIN_WITHOUT_HEAD = "chain_without_head"
    CHAIN_MISSING = "chain_missing"
    CHAIN_UNANNOUNCED = "chain_unannounced"


@dataclass(frozen=True, slots=True)
class Break:
    chain_id: str
    seq: int
    kind: BreakKind
    detail: str
    event_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "chain_id": self.chain_id,
            "seq": self.seq,
            "kind": self.kind.value,
            "detail": self.detail,
            "event_id": self.event_id,
        }


@dataclass
class Report:
    chains: int = 0
    events: int = 0
    digests: int = 0
    broken: Break | None = None
    sealed_through: dict[str, int] = field(default_factory=dict)
    # chain 0's id -> the most chains its ``audit.chains_opened`` events gave the group
    announced: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "chains": self.chains,
            "events": self.events,
            "digests": self.digests,
            "first_break": self.broken.as_dict() if self.broken else None,
        }


def _chained(row: AuditRow) -> ChainedEvent:
    return ChainedEvent(
        id=row.id,
        chain_id=row.chain_id,
        seq=row.seq,
        occurred_at=row.occurred_at,
        code=row.code,
        key_id=row.key_id,
        actor=row.actor,
        subject=row.subject,
        token=row.token,
        ip=row.ip,
        fields=row.fields,
        prev_hash=row.prev_hash,
    )


def _body(digest: AuditDigest) -> DigestBody:
    return DigestBody(
        chain_id=digest.chain_id,
        first_seq=digest.first_seq,
        last_seq=digest.last_seq,
        prev_hash=digest.prev_hash,
        last_hash=digest.last_hash,
        previous_digest_hash=digest.previous_digest_hash,
        signed_at=digest.signed_at,
        signing_key_id=digest.signing_key_id,
    )


async def _events(database: Database, chain_id: str) -> AsyncIterator[AuditRow]:
    after: tuple[int, str] | None = None
    while True:
        query = select(AuditRow).where(AuditRow.chain_id == chain_id)
        if after is not None:
            query = query.where(
                or_(
                    AuditRow.seq > after[0],
                    and_(AuditRow.seq == after[0], AuditRow.id > after[1]),
                )
            )
        async with database.read() as session:
            rows = list(
                await session.scalars(query.order_by(AuditRow.seq, AuditRow.id).limit(BATCH))
            )
        for row in rows:
            yield row
        if len(rows) < BATCH:
            return
        after = (rows[-1].seq, rows[-1].id)


class _DigestWalk:
    """Checks a chain's digests in order as the event walk reaches each one's end."""

    def __init__(self, chain_id: str, digests: list[AuditDigest], keys: PublicKeys) -> None:
        self.chain_id = chain_id
        self.pending = digests
        self.keys = keys
        self.expected_first = 1
        self.anchor = GENESIS  # the hash just before the next digest's range
        self.previous = GENESIS  # hash of the last verified digest
        self.checked = 0

    def _break(self, digest: AuditDigest, kind: BreakKind, detail: str) -> Break:
        return Break(self.chain_id, digest.last_seq, kind, f"digest {digest.id}: {detail}")

    def at_event(self, seq: int, event_hash: str) -> Break | None:
        while self.pending and self.pending[0].last_seq <= seq:
            digest = self.pending.pop(0)
            broken = self.check(digest, seq, event_hash)
            if broken is not None:
                return broken
        return None

    def check(self, digest: AuditDigest, seq: int, event_hash: str) -> Break | None:
        body = _body(digest)
        if digest.signing_key_id not in self.keys:
            return self._break(
                digest,
                BreakKind.DIGEST_UNKNOWN_KEY,
                f"signed by unknown key {digest.signing_key_id}",
            )
        try:
            signature = bytes.fromhex(digest.signature)
        except ValueError:
            signature = b""
        if not self.keys.verify(digest.signing_key_id, signature, body.canonical()):
            return self._break(digest, BreakKind.DIGEST_SIGNATURE_INVALID, "bad signature")
        if digest.first_seq != self.expected_first or digest.previous_digest_hash != self.previous:
            return self._break(
                digest,
                BreakKind.DIGEST_CHAIN_BROKEN,
                f"expected a digest from seq {self.expected_first} after the previous digest",
            )
        if (
            digest.last_seq != seq
            or digest.last_hash != event_hash
            or digest.prev_hash != self.anchor
        ):
            return self._break(
                digest, BreakKind.DIGEST_MISMATCH, "the signed hashes do not match the events"
            )
        self.expected_first = digest.last_seq + 1
        self.anchor = digest.last_hash
        self.previous = digest_hash(body, digest.signature)
        self.checked += 1
        return None


async def verify_chain(  # noqa: PLR0911 - each return names a different broken link
    database: Database, chain_id: str, keys: PublicKeys, report: Report
) -> None:
    async with database.read() as session:
        head = await session.get(AuditChain, chain_id)
        digests = list(
            await session.scalars(
                select(AuditDigest)
                .where(AuditDigest.chain_id == chain_id)
                .order_by(AuditDigest.first_seq, AuditDigest.id)
            )
        )
    walk = _DigestWalk(chain_id, digests, keys)
    report.chains += 1
    expected, previous = 1, GENESIS
    async for row in _events(database, chain_id):
        report.events += 1
        if row.seq != expected:
            kind = BreakKind.SEQUENCE_GAP if row.seq > expected else BreakKind.SEQUENCE_DUPLICATE
            detail = (
                f"expected seq {expected}, found {row.seq}: events are missing"
                if kind is BreakKind.SEQUENCE_GAP
                else f"seq {row.seq} appears again or out of order"
            )
            report.broken = Break(chain_id, expected, kind, detail, row.id)
            return
        if _chained(row).hash() != row.hash:
            report.broken = Break(
                chain_id,
                row.seq,
                BreakKind.EVENT_HASH_MISMATCH,
                "the event's contents do not match its hash (edited or moved)",
                row.id,
            )
            return
        if row.prev_hash != previous:
            report.broken = Break(
                chain_id,
                row.seq,
                BreakKind.PREV_HASH_MISMATCH,
                "the link to the previous event is broken (deleted, inserted or reordered)",
                row.id,
            )
            return
        broken = walk.at_event(row.seq, row.hash)
        if broken is not None:
            report.broken = broken
            return
        if row.code == EventCode.AUDIT_CHAINS_OPENED:
            _announce(report, row)
        previous = row.hash
        expected += 1
    last_seq = expected - 1
    report.digests += walk.checked
    if walk.pending:
        digest = walk.pending[0]
        report.broken = Break(
            chain_id,
            last_seq + 1,
            BreakKind.DIGEST_BEYOND_END,
            f"digest {digest.id} covers up to seq {digest.last_seq}, the chain ends at {last_seq}",
        )
        return
    if head is None:
        report.broken = Break(
            chain_id, last_seq, BreakKind.CHAIN_WITHOUT_HEAD, "the chain's head row is missing"
        )
        return
    if head.seq != last_seq or head.head_hash != previous:
        report.broken = Break(
            chain_id,
            min(head.seq, last_seq) + 1,
            BreakKind.HEAD_MISMATCH,
            f"the head says seq {head.seq}, the events end at {last_seq}",
        )
        return
    if head.digested_seq != walk.expected_first - 1 or head.last_digest_hash != walk.previous:
        report.broken = Break(
            chain_id,
            walk.expected_first,
            BreakKind.DIGEST_CHAIN_BROKEN,
            f"the head says sealed through seq {head.digested_seq}, the digests end at "
            f"{walk.expected_first - 1}",
        )
        return
    report.sealed_through[chain_id] = head.digested_seq


def _announce(report: Report, row: AuditRow) -> None:
    """Note the chain count an ``audit.chains_opened`` event (hash already checked) gives."""
    base, number = stripes.split(row.chain_id)
    chains = json.loads(row.fields).get("chains")
    if number == 0 and isinstance(chains, int):
        report.announced[base] = max(report.announced.get(base, 1), chains)


def _check_groups(ids: list[str], report: Report) -> Break | None:
    """Each organisation's chains are exactly ``0 .. n - 1`` for the ``n`` its chain 0 recorded."""
    groups: defaultdict[str, set[int]] = defaultdict(set)
    for chain in ids:
        base, number = stripes.split(chain)
        groups[base].add(number)
    for base, numbers in sorted(groups.items()):
        expected = set(range(report.announced.get(base, 1)))
        for kind, odd, what in (
            (BreakKind.CHAIN_MISSING, expected - numbers, "has no head, digest or event"),
            (BreakKind.CHAIN_UNANNOUNCED, numbers - expected, "was never opened"),
        ):
            if odd:
                number = min(odd)
                detail = (
                    f"chain 0 records {len(expected)} chains for this organisation; "
                    f"chain {number} {what}"
                )
                return Break(stripes.chain_id(base, number), 0, kind, detail)
    return None


async def chain_ids(session: AsyncSession, candidates: list[str] | None = None) -> list[str]:
    """Every chain named by a head row, a digest or an event (or those among ``candidates``)."""
    found: set[str] = set()
    for column in (AuditChain.chain_id, AuditDigest.chain_id, AuditRow.chain_id):
        query = select(column).distinct()
        if candidates is not None:
            query = query.where(column.in_(candidates))
        found.update(await session.scalars(query))
    return sorted(found)


async def verify(
    database: Database, keys: PublicKeys, *, candidates: list[str] | None = None
) -> Report:
    """Verify every chain (or the chains among ``candidates``); stops at the first break."""
    async with database.read() as session:
        ids = await chain_ids(session, candidates)
    report = Report()
    for chain_id in ids:
        await verify_chain(database, chain_id, keys, report)
        if report.broken is not None:
            return report
    report.broken = _check_groups(ids, report)
    return report
