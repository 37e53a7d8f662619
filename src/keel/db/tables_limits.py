"""Tables of the limits subsystem: breaches, per-org overrides, noisy-neighbour flags."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.tables import ID, Base
from keel.db.types import UTCDateTime


class RateLimitBreach(Base):
    """One 429, written in batches off the request path. Users appear only as keyed hashes."""

    __tablename__ = "rate_limit_breaches"
    __table_args__ = (Index(None, "occurred_at"), Index(None, "org_id", "occurred_at"))

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    limit_name: Mapped[str] = mapped_column(String(100))
    key_kind: Mapped[str] = mapped_column(String(10))
    org_id: Mapped[str | None] = mapped_column(ID, default=None)
    user_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    ip_hash: Mapped[str | None] = mapped_column(String(64), default=None)


class LimitOverrideRow(Base):
    """An admin's per-organisation number for one limit (``keel limits set-override``)."""

    __tablename__ = "limit_overrides"

    org_id: Mapped[str] = mapped_column(ID, ForeignKey("orgs.id"), primary_key=True)
    limit_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    set_by: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NoisyFlag(Base):
    """A noisy-neighbour flag: raised when detected, closed (``cleared_at``) when it stops."""

    __tablename__ = "noisy_flags"
    __table_args__ = (Index(None, "cleared_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(ID)
    reason: Mapped[str] = mapped_column(String(20))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    flagged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
