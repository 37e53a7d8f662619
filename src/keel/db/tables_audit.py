"""The audit log's tables: events, one head row per chain, signed digests.

No column holds a raw user, organisation or token id, email or IP address:
``chain_id``, ``actor``, ``subject``, ``token`` and ``ip`` are keyed
pseudonyms (``keel.audit.pseudonym``). ``(chain_id, seq)`` is unique, so two
writers can never both take a sequence number; the head row is what they
lock to take the next one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.tables import ID, Base
from keel.db.types import UTCDateTime

PSEUDONYM = String(90)  # "<key id ≤16>:<64 hex>"
HASH = String(64)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        Index(None, "code", "occurred_at"),
        Index(None, "occurred_at"),
        Index(None, "actor"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    chain_id: Mapped[str] = mapped_column(PSEUDONYM)
    seq: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    code: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(PSEUDONYM, default=None)
    subject: Mapped[str | None] = mapped_column(PSEUDONYM, default=None)
    token: Mapped[str | None] = mapped_column(PSEUDONYM, default=None)
    ip: Mapped[str | None] = mapped_column(PSEUDONYM, default=None)
    fields: Mapped[str] = mapped_column(Text)  # canonical JSON object
    prev_hash: Mapped[str] = mapped_column(HASH)
    hash: Mapped[str] = mapped_column(HASH)


class AuditChain(Base):
    """The head of one chain: the last sequence number and hash, and the sealed prefix."""

    __tablename__ = "audit_chains"

    chain_id: Mapped[str] = mapped_column(PSEUDONYM, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(HASH)
    digested_seq: Mapped[int] = mapped_column(BigInteger)
    digested_hash: Mapped[str] = mapped_column(HASH)
    last_digest_hash: Mapped[str] = mapped_column(HASH)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditDigest(Base):
    """An Ed25519 signature over a range of one chain (CloudTrail's digest files, in a table)."""

    __tablename__ = "audit_digests"
    __table_args__ = (UniqueConstraint("chain_id", "first_seq"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    chain_id: Mapped[str] = mapped_column(PSEUDONYM)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(HASH)  # the hash before first_seq
    last_hash: Mapped[str] = mapped_column(HASH)  # the hash of last_seq
    previous_digest_hash: Mapped[str] = mapped_column(HASH)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signing_key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))  # hex of 64 bytes
