"""The tables of the product domain.

Ids are UUIDv7 strings (sortable, generated in the application so that a row's
id is known before it is written). Deletions of user content are soft
(``deleted_at``) so an audit trail can point at what was removed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from keel.db.types import UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(36)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="free")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("email"), Index(None, "org_id", "id"))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, ForeignKey("orgs.id"))
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash"), Index(None, "user_id"))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id"))
    org_id: Mapped[str] = mapped_column(ID, ForeignKey("orgs.id"))
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Recognition(Base):
    __tablename__ = "recognitions"
    __table_args__ = (
        Index(None, "org_id", "id"),
        Index(None, "org_id", "recipient_id", "id"),
        Index(None, "org_id", "giver_id", "id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, ForeignKey("orgs.id"))
    giver_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id"))
    recipient_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id"))
    message: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    deleted_by: Mapped[str | None] = mapped_column(ID, default=None)


class RecognitionEvidence(Base):
    __tablename__ = "recognition_evidence"

    recognition_id: Mapped[str] = mapped_column(ID, ForeignKey("recognitions.id"), primary_key=True)
    evidence_id: Mapped[str] = mapped_column(ID, ForeignKey("evidence.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class Evidence(Base):
    __tablename__ = "evidence"
    __table_args__ = (Index(None, "org_id", "id"), Index(None, "org_id", "storage_key"))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, ForeignKey("orgs.id"))
    uploader_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Export(Base):
    __tablename__ = "exports"
    __table_args__ = (Index(None, "org_id", "id"), Index(None, "status"))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ID, ForeignKey("orgs.id"))
    requested_by: Mapped[str] = mapped_column(ID, ForeignKey("users.id"))
    format: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    storage_key: Mapped[str | None] = mapped_column(String(300), default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    row_count: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


# Tables of other concepts register on the same Base; imported last because they import it.
from keel.db import (  # noqa: E402, F401
    tables_audit,
    tables_deploy,
    tables_idempotency,
    tables_jobs,
    tables_limits,
    tables_slo,
)
