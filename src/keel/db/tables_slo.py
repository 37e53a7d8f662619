"""The SLO rollups: per SLO and minute, how many requests counted and how many were good.

Every serving process adds its own minute's counts to the row with an upsert
(``total = total + excluded.total``), so several processes share one row and
``keel slo report`` reads error budgets without Prometheus. The primary key is
the upsert's conflict target.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from keel.db.tables import Base
from keel.db.types import UTCDateTime


class SLORollup(Base):
    __tablename__ = "slo_rollups"

    slo_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    """The start of the minute (UTC, seconds zero) the counts belong to."""
    total: Mapped[int] = mapped_column(BigInteger)
    good: Mapped[int] = mapped_column(BigInteger)
