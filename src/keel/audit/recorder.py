"""Appending to the audit log, inside the caller's transaction.

One chain per organisation (and one ``system`` chain for events that belong
to no organisation: breakers, migrations, deployments, unknown-token
failures). Per-organisation chains let writers for different organisations
append without waiting for each other; writers for one organisation queue on
that chain's head row, which is the price of a gap-free chain.

Appending locks the head row (on PostgreSQL; SQLite write transactions are
already serialised by ``BEGIN IMMEDIATE``), takes ``seq + 1`` and the head
hash, inserts the event and moves the head — all in the caller's
transaction, so the event commits or rolls back with the domain write it
describes. Call it *last* in the transaction, after the domain write and
anything else: the head lock is held from the append to the commit, and
every writer of the organisation waits that long.

Every ``digest_every`` events, the append also seals the range since the last
digest with an Ed25519 signature, in the same transaction while the head is
still locked (the head row carries the hash at the last sealed point).
``seal`` does the same on demand for a chain's open tail (``keel audit digest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, Text, bindparam, func, insert, select, update
from sqlalchemy import cast as cast_to
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from keel.audit.authentication import AuthenticationAudit
from keel.audit.chain import (
    GENESIS,
    DigestBody,
    UnchainedEvent,
    digest_hash,
    encode_fields,
)
from keel.audit.events import AuditEvent
from keel.audit.pseudonym import KeyRing, Kind
from keel.audit.signing import Signer
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables_audit import AuditChain, AuditDigest
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.ids import new_id

SYSTEM_CHAIN = "system"
DEFAULT_DIGEST_EVERY = 100

# PostgreSQL appends in ONE statement: it locks the head (the oldest of the
# chain's candidate ids), computes the event's hash from the head's seq and hash
# (SHA-256 over the canonical text, whose other parts come as parameters: see
# ``UnchainedEvent.around_head``), moves the head and inserts the event. Every
# writer of the organisation queues on the head row's lock until its transaction
# commits, so a caller makes this its transaction's last statement: the lock is
# then held for this statement and the COMMIT, not across reads, writes and
# Python in between. No row: the chain has no head yet (created, then retried).
APPEND_POSTGRESQL = """
WITH head AS (
    SELECT chain_id, seq, head_hash FROM audit_chains
    WHERE chain_id = ANY($1::varchar[])
    ORDER BY created_at
    LIMIT 1
    FOR UPDATE
),
moved AS (
    UPDATE audit_chains AS chain
    SET seq = head.seq + 1,
        head_hash = encode(sha256(convert_to(
            $2::text || to_json(head.chain_id)::text || $3::text
            || to_json(head.head_hash)::text || $4::text || (head.seq + 1)::text || $5::text,
            'UTF8')), 'hex')
    FROM head
    WHERE chain.chain_id = head.chain_id
    RETURNING chain.chain_id, chain.seq, chain.head_hash, head.head_hash AS prev_hash,
              chain.digested_seq
),
appended AS (
    INSERT INTO audit_events
        (id, chain_id, seq, occurred_at, code, key_id, actor, subject, token, ip, fields,
         prev_hash, hash)
    SELECT $6::varchar, chain_id, seq, $7::timestamptz, $8::varchar, $9::varchar,
           $10::varchar, $11::varchar, $12::varchar, $13::varchar, $14::text, prev_hash, head_hash
    FROM moved
)
SELECT chain_id, seq, head_hash, digested_seq FROM moved
"""
# SQLite serialises write transactions (``BEGIN IMMEDIATE``), so nothing is
# locked here; it has no data-modifying CTEs either. Two statements: the event,
# inserted from the head row with its hash computed in SQL (``keel_sha256``, which
# ``keel.db.engine`` registers on every SQLite connection), then the head's move.
# Core, built once: building a statement costs more than running it.
_EVENTS = cast(Table, AuditRow.__table__)
_CHAINS = cast(Table, AuditChain.__table__)
_HEAD = _CHAINS.c
_NEXT_SEQ = _HEAD.seq + 1
_PARTS = [bindparam(f"part{index}", type_=Text()) for index in range(4)]
_HASH_SQLITE = func.keel_sha256(
    _PARTS[0]
    .concat(func.json_quote(_HEAD.chain_id))
    .concat(_PARTS[1])
    .concat(func.json_quote(_HEAD.head_hash))
    .concat(_PARTS[2])
    .concat(cast_to(_NEXT_SEQ, Text()))
    .concat(_PARTS[3]),
    type_=Text(),
)
_FROM_HEAD: dict[str, ColumnElement[Any]] = {
    "chain_id": _HEAD.chain_id,
    "seq": _NEXT_SEQ,
    "prev_hash": _HEAD.head_hash,
    "hash": _HASH_SQLITE,
}
APPEND_SQLITE = (
    insert(_EVENTS)
    .from_select(
        [column.name for column in _EVENTS.c],
        select(
            *(
                _FROM_HEAD.get(column.name, bindparam(f"e_{column.name}", type_=column.type))
                for column in _EVENTS.c
            )
        )
        .where(_HEAD.chain_id.in_(bindparam("candidates", expanding=True)))
        .order_by(_HEAD.created_at)
        .limit(1),
    )
    .returning(_EVENTS.c.chain_id, _EVENTS.c.seq, _EVENTS.c.hash)
)
MOVE_HEAD = (
    update(_CHAINS)
    .where(_HEAD.chain_id == bindparam("h_chain"))
    .values(seq=bindparam("h_seq"), head_hash=bindparam("h_hash"))
    .returning(_HEAD.digested_seq)
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

    async def _create_head(self, session: AsyncSession, org_id: str | None) -> None:
        """The chain's head row, if it has none yet (its first event)."""
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

    # --- appending --------------------------------------------------------------

    def _unchained(self, event: AuditEvent) -> UnchainedEvent:
        keys = self.keys

        def pseudonym(kind: Kind, value: str | None) -> str | None:
            return keys.pseudonym(kind, value) if value else None

        return UnchainedEvent(
            id=new_id(),
            occurred_at=self.clock.now(),
            code=event.code.value,
            key_id=keys.current_id,
            actor=pseudonym("user", event.actor_id),
            subject=pseudonym("user", event.subject_id),
            token=pseudonym("token", event.token_id),
            ip=pseudonym("ip", event.ip),
            fields=encode_fields(event.fields),
        )

    async def record(self, session: AsyncSession, event: AuditEvent) -> Recorded:
        """Append ``event`` in the caller's transaction (commits or rolls back with it).

        Make it the transaction's last statement when other writers of the same
        organisation may be waiting: the chain head stays locked until the commit."""
        event.check()
        unchained = self._unchained(event)
        candidates = self.chain_candidates(event.org_id)
        if session.get_bind().dialect.name == "postgresql":
            recorded, digested_seq = await self._append_postgresql(session, unchained, candidates)
            if recorded is None:
                await self._create_head(session, event.org_id)
                recorded, digested_seq = await self._append_postgresql(
                    session, unchained, candidates
                )
        else:
            recorded, digested_seq = await self._append_sqlite(session, unchained, candidates)
            if recorded is None:
                await self._create_head(session, event.org_id)
                recorded, digested_seq = await self._append_sqlite(session, unchained, candidates)
        if recorded is None:  # pragma: no cover - the row was inserted or already there
            raise RuntimeError("audit chain head vanished")
        if recorded.seq - digested_seq >= self.digest_every:
            # The head is still locked by this transaction: the seal covers up to this event.
            await self.seal(session, recorded.chain_id)
        return recorded

    async def _append_postgresql(
        self, session: AsyncSession, unchained: UnchainedEvent, candidates: list[str]
    ) -> tuple[Recorded | None, int]:
        connection = await session.connection()
        result = await connection.exec_driver_sql(
            APPEND_POSTGRESQL,
            (
                candidates,
                *unchained.around_head(),
                unchained.id,
                unchained.occurred_at,
                unchained.code,
                unchained.key_id,
                unchained.actor,
                unchained.subject,
                unchained.token,
                unchained.ip,
                unchained.fields,
            ),
        )
        row: Any = result.first()  # (chain_id, seq, head_hash, digested_seq)
        if row is None:
            return None, 0
        recorded = Recorded(id=unchained.id, chain_id=row[0], seq=row[1], hash=row[2])
        return recorded, int(row[3])

    async def _append_sqlite(
        self, session: AsyncSession, unchained: UnchainedEvent, candidates: list[str]
    ) -> tuple[Recorded | None, int]:
        params: dict[str, object] = {
            "candidates": candidates,
            **{f"part{index}": part for index, part in enumerate(unchained.around_head())},
            "e_id": unchained.id,
            "e_occurred_at": unchained.occurred_at,
            "e_code": unchained.code,
            "e_key_id": unchained.key_id,
            "e_actor": unchained.actor,
            "e_subject": unchained.subject,
            "e_token": unchained.token,
            "e_ip": unchained.ip,
            "e_fields": unchained.fields,
        }
        appended = (await session.execute(APPEND_SQLITE, params)).first()
        if appended is None:
            return None, 0
        chain_id, seq, event_hash = appended
        moved = await session.execute(
            MOVE_HEAD, {"h_chain": chain_id, "h_seq": seq, "h_hash": event_hash}
        )
        digested_seq = moved.scalar_one()
        return Recorded(id=unchained.id, chain_id=chain_id, seq=seq, hash=event_hash), digested_seq

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
