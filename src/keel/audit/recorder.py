"""Appending to the audit log, inside the caller's transaction.

Each organisation has its chains (``KEEL_AUDIT_CHAINS_PER_ORG``, see
``keel.audit.stripes``), and one ``system`` chain holds events that belong to
no organisation (breakers, migrations, deployments, unknown-token failures).
Writers for different organisations never wait for each other; writers for
one organisation each take a free chain of the organisation's, and wait only
when every one is taken.

Appending locks a head row (on PostgreSQL; SQLite write transactions are
already serialised by ``BEGIN IMMEDIATE`` and use chain 0 alone), takes
``seq + 1`` and the head hash, inserts the event and moves the head — all in
the caller's transaction, so the event commits or rolls back with the domain
write it describes. Call it *last* in the transaction, after the domain write
and anything else: the head lock is held from the append to the commit.

Every ``digest_every`` events of a chain, the append also seals the range
since the chain's last digest with an Ed25519 signature, in the same
transaction while the head is still locked (the head row carries the hash at
the last sealed point). ``seal`` does the same on demand for a chain's open
tail (``keel audit digest``).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, cast

import structlog
from sqlalchemy import Table, Text, bindparam, func, insert, select, update
from sqlalchemy import cast as cast_to
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from keel.audit import stripes
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
from keel.audit.registry import EventCode
from keel.audit.signing import Signer
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database, transaction_driver
from keel.db.tables_audit import AuditChain, AuditDigest
from keel.db.tables_audit import AuditEvent as AuditRow
from keel.errors import KeelError
from keel.ids import new_id

log = structlog.get_logger(__name__)

SYSTEM_CHAIN = "system"
DEFAULT_DIGEST_EVERY = 100

# PostgreSQL appends in ONE statement: it locks a head among the organisation's
# chains ($1), computes the event's hash from that head's seq and hash (SHA-256
# over the canonical text, whose other parts come as parameters: see
# ``UnchainedEvent.around_head``), moves the head and inserts the event. The head
# is the first of the chains no other transaction holds (SKIP LOCKED: no wait);
# only when every one is held does it queue on one, preferably one of $2 (the
# caller spreads its waiters over the chains), and READ COMMITTED re-reads that
# head once its holder commits. A head stays locked until the transaction
# commits, so a caller makes this its transaction's last statement: the lock is
# then held for this statement and the COMMIT, not across reads, writes and
# Python in between. It also counts the organisation's chains, so the recorder
# knows when to open the missing ones. No row: the organisation has no chain yet
# (its chain 0 is created, then this is retried).
APPEND_POSTGRESQL = """
WITH free AS MATERIALIZED (
    SELECT chain_id, seq, head_hash FROM audit_chains
    WHERE chain_id = ANY($1::varchar[])
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
taken AS (
    SELECT chain_id, seq, head_hash FROM audit_chains
    WHERE chain_id = ANY($1::varchar[]) AND NOT EXISTS (SELECT FROM free)
    ORDER BY chain_id = ANY($2::varchar[]) DESC, created_at, chain_id
    LIMIT 1
    FOR UPDATE
),
head AS (
    SELECT chain_id, seq, head_hash FROM free
    UNION ALL
    SELECT chain_id, seq, head_hash FROM taken
),
moved AS (
    UPDATE audit_chains AS chain
    SET seq = head.seq + 1,
        head_hash = encode(sha256(convert_to(
            $3::text || to_json(head.chain_id)::text || $4::text
            || to_json(head.head_hash)::text || $5::text || (head.seq + 1)::text || $6::text,
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
    SELECT $7::varchar, chain_id, seq, $8::timestamptz, $9::varchar, $10::varchar,
           $11::varchar, $12::varchar, $13::varchar, $14::varchar, $15::text, prev_hash,
           head_hash
    FROM moved
)
SELECT chain_id, seq, head_hash, digested_seq,
       (SELECT count(*) FROM audit_chains WHERE chain_id = ANY($1::varchar[]))
FROM moved
"""
# Opening an organisation's chains 1 .. n - 1 (their ids in $1), in ascending
# order so two openers meet on the same first row and one waits for the other
# instead of each holding rows the other needs. Run in a transaction of its own
# that holds nothing else, which then appends ``audit.chains_opened`` to chain 0
# (see ``Auditor.open_chains``).
OPEN_CHAINS_POSTGRESQL = """
INSERT INTO audit_chains
    (chain_id, seq, head_hash, digested_seq, digested_hash, last_digest_hash, created_at)
SELECT opened.chain_id, 0, $2::varchar, 0, $2::varchar, $2::varchar, $3::timestamptz
FROM unnest($1::varchar[]) WITH ORDINALITY AS opened (chain_id, number)
ORDER BY opened.number
ON CONFLICT (chain_id) DO NOTHING
RETURNING chain_id
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
        chains_per_org: int = 1,
        auth_failure_flush_seconds: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not 1 <= chains_per_org <= stripes.MAX_CHAINS_PER_ORG:
            raise ValueError(f"chains_per_org must be 1..{stripes.MAX_CHAINS_PER_ORG}")
        self.database = database
        self.keys = keys
        self.signer = signer
        self.digest_every = digest_every
        self.chains_per_org = chains_per_org
        self.clock = clock
        self._turns = itertools.count()  # which chain number a writer queues on (org_chains)
        self._opening: dict[str, asyncio.Task[None]] = {}  # chain 0's id -> its opener
        # Only a started auditor (a server's, a worker's) opens chains in the background: a
        # CLI command's would leave its opener behind when it exits.
        self._opens_chains = False
        self.authentication = AuthenticationAudit(
            self, database, flush_seconds=auth_failure_flush_seconds, clock=clock
        )

    async def start(self) -> None:
        """Start batching failed authentications (flushed off the request path), and opening
        an organisation's missing chains when an append finds them missing."""
        self.authentication.start()
        self._opens_chains = True

    async def stop(self) -> None:
        self._opens_chains = False
        await self.authentication.stop()
        await self.wait_for_openers()

    async def wait_for_openers(self) -> None:
        """Wait until every chain opener started so far has finished (tests, shutdown)."""
        while self._opening:
            await asyncio.gather(*self._opening.values(), return_exceptions=True)

    # --- chains -----------------------------------------------------------------

    def chain_candidates(self, org_id: str | None) -> list[str]:
        """Every id the organisation's chain 0 may have (named under the key of its birth)."""
        if org_id is None:
            return [SYSTEM_CHAIN]
        return self.keys.candidates("org", org_id)

    def org_chains(self, org_id: str | None) -> tuple[list[str], list[str]]:
        """The chains an append may take (``chains_per_org`` of the organisation's, under
        every key; the system chain alone), and those it queues on when all are held: one
        chain number, turn by turn, so waiters spread over the chains."""
        bases = self.chain_candidates(org_id)
        if org_id is None:
            return bases, bases
        turn = next(self._turns) % self.chains_per_org
        return (
            stripes.group(bases, self.chains_per_org),
            [stripes.chain_id(base, turn) for base in bases],
        )

    async def find_chains(self, session: AsyncSession, org_id: str | None) -> list[str]:
        """The organisation's chains that have a head row."""
        candidates = [SYSTEM_CHAIN] if org_id is None else stripes.every_chain(self.keys, org_id)
        return list(
            await session.scalars(
                select(AuditChain.chain_id)
                .where(AuditChain.chain_id.in_(candidates))
                .order_by(AuditChain.chain_id)
            )
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
        if session.get_bind().dialect.name == "postgresql":
            candidates, waits_on = self.org_chains(event.org_id)
            recorded, digested_seq, chains = await self._append_postgresql(
                session, unchained, candidates, waits_on
            )
            if recorded is None:
                await self._create_head(session, event.org_id)
                recorded, digested_seq, chains = await self._append_postgresql(
                    session, unchained, candidates, waits_on
                )
            elif self._opens_chains and event.org_id is not None and chains < self.chains_per_org:
                # Only from a head found committed (not one this transaction just
                # created): the opener appends to chain 0, which must be visible to it.
                self._open_later(event.org_id, stripes.split(recorded.chain_id)[0])
        else:
            candidates = self.chain_candidates(event.org_id)
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
        self,
        session: AsyncSession,
        unchained: UnchainedEvent,
        candidates: list[str],
        waits_on: list[str],
    ) -> tuple[Recorded | None, int, int]:
        """``(recorded, the chain's digested seq, how many of candidates exist)``."""
        arguments = (
            candidates,
            waits_on,
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
        )
        row: Any  # (chain_id, seq, head_hash, digested_seq, chains)
        # On the transaction's asyncpg connection when it has one: a third less Python
        # than through SQLAlchemy's Connection (``transaction_driver``).
        async with transaction_driver(session) as driver:
            if driver is None:
                connection = await session.connection()
                row = (await connection.exec_driver_sql(APPEND_POSTGRESQL, arguments)).first()
            else:
                row = await driver.fetchrow(APPEND_POSTGRESQL, *arguments)
        if row is None:
            return None, 0, 0
        recorded = Recorded(id=unchained.id, chain_id=row[0], seq=row[1], hash=row[2])
        return recorded, int(row[3]), int(row[4])

    # --- opening an organisation's further chains (PostgreSQL) -------------------

    def _open_later(self, org_id: str, base: str) -> None:
        """Open the organisation's missing chains off the request path, once at a time."""
        if base in self._opening:
            return
        task = asyncio.get_running_loop().create_task(
            self._open_quietly(org_id, base), name=f"audit-open-chains-{base}"
        )
        self._opening[base] = task
        task.add_done_callback(lambda _task: self._opening.pop(base, None))

    async def _open_quietly(self, org_id: str, base: str) -> None:
        try:
            await self.open_chains(org_id, base)
        except (KeelError, SQLAlchemyError, RuntimeError) as error:
            # Appends go on on the chains there are; the next append tries again.
            log.warning("audit_chains_open_failed", chain=base, error=str(error))

    async def open_chains(self, org_id: str, base: str) -> list[str]:
        """Create the organisation's chains ``1 .. chains_per_org - 1`` that are missing, and
        record how many it has on its chain 0 in the same transaction; returns those created.

        Its own transaction, holding nothing else while it waits (on another opener's
        rows, or on chain 0's head): never in a request's transaction."""
        opened_ids = [stripes.chain_id(base, n) for n in range(1, self.chains_per_org)]
        async with self.database.write() as session:
            connection = await session.connection()
            result = await connection.exec_driver_sql(
                OPEN_CHAINS_POSTGRESQL, (opened_ids, GENESIS, self.clock.now())
            )
            opened = [row[0] for row in result.fetchall()]
            if not opened:
                return []
            event = AuditEvent(
                EventCode.AUDIT_CHAINS_OPENED,
                org_id=org_id,
                fields={"chains": self.chains_per_org},
            )
            event.check()
            recorded, digested_seq, _chains = await self._append_postgresql(
                session, self._unchained(event), [base], [base]
            )
            if recorded is None:
                raise RuntimeError(f"audit chain {base} has no head to record its new chains on")
            if recorded.seq - digested_seq >= self.digest_every:
                await self.seal(session, recorded.chain_id)
        log.info("audit_chains_opened", chain=base, opened=len(opened))
        return opened

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
