"""Appending to the audit log, inside the caller's transaction.

One chain per organisation (and one ``system`` chain for events that belong
to no organisation: breakers, migrations, deployments, unknown-token
failures). Per-organisation chains let writers for different organisations
append without waiting for each other; writers for one organisation queue on
that chain's head row, which is the price of a gap-free chain.

Appending locks the head row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite
write transactions are already serialised by ``BEGIN IMMEDIATE``), takes
``seq + 1`` and the head hash, inserts the event and moves the head — all in
the caller's transaction, so the event commits or rolls back with the domain
write it describes. Call it *after* the domain write in the transaction: the
head lock is then held only for the rest of that transaction.

Every ``digest_every`` events, the append also seals the range since the last
digest with an Ed25519 signature (no extra reads: the head row carries the
hash at the last sealed point). ``seal`` does the same on demand for a
chain's open tail (``keel audit digest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from keel.audit.authentication import AuthenticationAudit
from keel.audit.chain import GENESIS, ChainedEvent, DigestBody, digest_hash, encode_fields
from keel.audit.events import AuditEvent
from keel.audit.pseudonym import KeyRing
from keel.audit.signing import Signer
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables_audit import AuditChain, AuditDigest
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.ids import new_id

SYSTEM_CHAIN = "system"
DEFAULT_DIGEST_EVERY = 100

# PostgreSQL appends in ONE statement: the event's INSERT with the head's move
# as a data-modifying CTE (which always runs). Every writer of the organisation
# queues on the head row's lock until its transaction commits, so each round
# trip after the lock is paid by the whole queue; the ORM flush sent two.
# SQLite has no data-modifying CTEs (and no network round trips): it keeps the
# ORM flush, as does the append that also seals a digest. Built once: building
# a statement costs more than running it.
_EVENTS = cast(Table, AuditRow.__table__)
_CHAINS = cast(Table, AuditChain.__table__)
_MOVE_HEAD = (
    update(_CHAINS)
    .where(_CHAINS.c.chain_id == bindparam("h_chain"))
    .values(seq=bindparam("h_seq"), head_hash=bindparam("h_hash"))
    .cte("moved_head")
)
APPEND_POSTGRESQL = (
    insert(_EVENTS)
    .values({column.name: bindparam(f"e_{column.name}") for column in _EVENTS.c})
    .add_cte(_MOVE_HEAD)
)


@dataclass(frozen=True, slots=True)
class Recorded:
    id: str
    chain_id: str
    seq: int
    hash: str


class Auditor:
    """The audit log's write side; ``Services.audit``."""

    def __init__(
        self,
        database: Database,
        keys: KeyRing,
        signer: Signer,
        *,
        digest_every: int = DEFAULT_DIGEST_EVERY,
        auth_failure_flush_seconds: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.database = database
        self.keys = keys
        self.signer = signer
        self.digest_every = digest_every
        self.clock = clock
        self.authentication = AuthenticationAudit(
            self, database, flush_seconds=auth_failure_flush_seconds, clock=clock
        )

    async def start(self) -> None:
        """Start batching failed authentications (flushed off the request path)."""
        self.authentication.start()

    async def stop(self) -> None:
        await self.authentication.stop()

    # --- chains -----------------------------------------------------------------

    def chain_candidates(self, org_id: str | None) -> list[str]:
        """Every id the organisation's chain may have (it is named under the key of its birth)."""
        if org_id is None:
            return [SYSTEM_CHAIN]
        return self.keys.candidates("org", org_id)

    async def find_chain(self, session: AsyncSession, org_id: str | None) -> str | None:
        return await session.scalar(
            select(AuditChain.chain_id)
            .where(AuditChain.chain_id.in_(self.chain_candidates(org_id)))
            .order_by(AuditChain.created_at)
            .limit(1)
        )

    async def _lock_head(self, session: AsyncSession, org_id: str | None) -> AuditChain:
        candidates = self.chain_candidates(org_id)
        query = (
            select(AuditChain)
            .where(AuditChain.chain_id.in_(candidates))
            .order_by(AuditChain.created_at)
            .limit(1)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        head = (await session.scalars(query)).first()
        if head is not None:
            return head
        chain_id = SYSTEM_CHAIN if org_id is None else self.keys.pseudonym("org", org_id)
        values = {
            "chain_id": chain_id,
            "seq": 0,
            "head_hash": GENESIS,
            "digested_seq": 0,
            "digested_hash": GENESIS,
            "last_digest_hash": GENESIS,
            "created_at": self.clock.now(),
        }
        # Two first writers may race to create the head: one inserts, the other's insert
        # waits on the primary key and then does nothing; both then lock the same row.
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(
            insert(AuditChain).values(**values).on_conflict_do_nothing(index_elements=["chain_id"])
        )
        head = (await session.scalars(query)).first()
        if head is None:  # pragma: no cover - the row was inserted or already there
            raise RuntimeError("audit chain head vanished")
        return head

    # --- appending --------------------------------------------------------------

    async def record(self, session: AsyncSession, event: AuditEvent) -> Recorded:
        """Append ``event`` in the caller's transaction (commits or rolls back with it)."""
        event.check()
        head = await self._lock_head(session, event.org_id)
        keys = self.keys

        def pseudonym(kind: str, value: str | None) -> str | None:
            if not value:
                return None
            return keys.pseudonym(kind, value)  # type: ignore[arg-type]

        chained = ChainedEvent(
            id=new_id(),
            chain_id=head.chain_id,
            seq=head.seq + 1,
            occurred_at=self.clock.now(),
            code=event.code.value,
            key_id=keys.current_id,
            actor=pseudonym("user", event.actor_id),
            subject=pseudonym("user", event.subject_id),
            token=pseudonym("token", event.token_id),
            ip=pseudonym("ip", event.ip),
            fields=encode_fields(event.fields),
            prev_hash=head.head_hash,
        )
        event_hash = chained.hash()
        sealing = chained.seq - head.digested_seq >= self.digest_every
        if not sealing and session.get_bind().dialect.name == "postgresql":
            await session.execute(
                APPEND_POSTGRESQL,
                {
                    "h_chain": head.chain_id,
                    "h_seq": chained.seq,
                    "h_hash": event_hash,
                    **{f"e_{name}": value for name, value in _row(chained, event_hash).items()},
                },
            )
            # The head row now holds these values; the ORM copy must not flush them again.
            set_committed_value(head, "seq", chained.seq)
            set_committed_value(head, "head_hash", event_hash)
            return Recorded(
                id=chained.id, chain_id=chained.chain_id, seq=chained.seq, hash=event_hash
            )
        session.add(
            AuditRow(
                id=chained.id,
                chain_id=chained.chain_id,
                seq=chained.seq,
                occurred_at=chained.occurred_at,
                code=chained.code,
                key_id=chained.key_id,
                actor=chained.actor,
                subject=chained.subject,
                token=chained.token,
                ip=chained.ip,
                fields=chained.fields,
                prev_hash=chained.prev_hash,
                hash=event_hash,
            )
        )
        head.seq = chained.seq
        head.head_hash = event_hash
        if sealing:
            self._seal(session, head)
        await session.flush()
        return Recorded(id=chained.id, chain_id=chained.chain_id, seq=chained.seq, hash=event_hash)

    async def record_now(self, event: AuditEvent) -> Recorded:
        """Append in a short transaction of its own, for code that holds no session."""
        async with self.database.write() as session:
            return await self.record(session, event)

    # --- digests ----------------------------------------------------------------

    def _seal(self, session: AsyncSession, head: AuditChain) -> AuditDigest:
        body = DigestBody(
            chain_id=head.chain_id,
            first_seq=head.digested_seq + 1,
            last_seq=head.seq,
            prev_hash=head.digested_hash,
            last_hash=head.head_hash,
            previous_digest_hash=head.last_digest_hash,
            signed_at=self.clock.now(),
            signing_key_id=self.signer.key_id,
        )
        signature = self.signer.sign(body.canonical()).hex()
        digest = AuditDigest(
            id=new_id(),
            chain_id=body.chain_id,
            first_seq=body.first_seq,
            last_seq=body.last_seq,
            prev_hash=body.prev_hash,
            last_hash=body.last_hash,
            previous_digest_hash=body.previous_digest_hash,
            signed_at=body.signed_at,
            signing_key_id=body.signing_key_id,
            signature=signature,
        )
        session.add(digest)
        head.digested_seq = body.last_seq
        head.digested_hash = body.last_hash
        head.last_digest_hash = digest_hash(body, signature)
        return digest

    async def seal(self, session: AsyncSession, chain_id: str) -> AuditDigest | None:
        """Sign the chain's events since its last digest; ``None`` when there are none."""
        head = (
            await session.scalars(
                select(AuditChain)
                .where(AuditChain.chain_id == chain_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).first()
        if head is None or head.seq == head.digested_seq:
            return None
        digest = self._seal(session, head)
        await session.flush()
        return digest

    async def seal_all(self) -> list[AuditDigest]:
        """Seal every chain's open tail, one short transaction per chain."""
        async with self.database.read() as session:
            chain_ids = list(await session.scalars(select(AuditChain.chain_id)))
        sealed = []
        for chain_id in chain_ids:
            async with self.database.write() as session:
                digest = await self.seal(session, chain_id)
            if digest is not None:
                sealed.append(digest)
        return sealed


def _row(chained: ChainedEvent, event_hash: str) -> dict[str, object]:
    """The ``audit_events`` row of ``chained``, by column name."""
    return {
        "id": chained.id,
        "chain_id": chained.chain_id,
        "seq": chained.seq,
        "occurred_at": chained.occurred_at,
        "code": chained.code,
        "key_id": chained.key_id,
        "actor": chained.actor,
        "subject": chained.subject,
        "token": chained.token,
        "ip": chained.ip,
        "fields": chained.fields,
        "prev_hash": chained.prev_hash,
        "hash": event_hash,
    }
