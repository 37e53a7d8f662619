"""The peers Keel is measured against end to end (issue 19), served by uvicorn.

``bare``: a FastAPI app with one GET — the ceiling for ``GET /live``.
``crud``: the obvious FastAPI + SQLAlchemy-async app on the same database,
inserting one recognition row per POST and listing the newest 20, with no
authentication, limits, idempotency or audit. Its table has the shape of
Keel's ``recognitions`` (same columns, types and indexes) and lives in its own
database (PostgreSQL) or file (SQLite), so the two never share locks.

Run: ``python bench/e2e/peers.py bare|crud --port N --workers W`` (the CRUD
peer reads its database URL from ``PEER_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import DateTime, Index, String, Text, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

bare = FastAPI()


@bare.get("/hello")
async def hello() -> dict[str, str]:
    return {"status": "ok"}


class Base(DeclarativeBase):
    pass


class PeerRecognition(Base):
    __tablename__ = "peer_recognitions"
    __table_args__ = (
        Index("ix_peer_org_id", "org_id", "id"),
        Index("ix_peer_org_recipient_id", "org_id", "recipient_id", "id"),
        Index("ix_peer_org_giver_id", "org_id", "giver_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(36))
    giver_id: Mapped[str] = mapped_column(String(36))
    recipient_id: Mapped[str] = mapped_column(String(36))
    message: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    deleted_by: Mapped[str | None] = mapped_column(String(36), default=None)


class RecognitionIn(BaseModel):
    recipient_id: str = Field(max_length=36)
    message: str = Field(min_length=1, max_length=2000)
    category: str | None = Field(default=None, max_length=100)


ORG = "00000000-0000-7000-8000-000000000001"
GIVER = "00000000-0000-7000-8000-000000000002"


def crud_app(url: str) -> FastAPI:
    engine = create_async_engine(url, pool_size=10, max_overflow=10)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/recognitions", status_code=201)
    async def create(body: RecognitionIn) -> dict[str, object]:
        row = PeerRecognition(
            id=str(uuid.uuid4()),
            org_id=ORG,
            giver_id=GIVER,
            recipient_id=body.recipient_id,
            message=body.message,
            category=body.category,
            created_at=datetime.now(UTC),
        )
        async with sessions.begin() as session:
            session.add(row)
        return {"id": row.id, "message": row.message, "created_at": row.created_at.isoformat()}

    @app.get("/recognitions")
    async def listing(limit: int = 20) -> dict[str, object]:
        async with sessions() as session:
            rows = await session.scalars(
                select(PeerRecognition)
                .where(PeerRecognition.org_id == ORG, PeerRecognition.deleted_at.is_(None))
                .order_by(PeerRecognition.id.desc())
                .limit(limit)
            )
            items = [
                {"id": r.id, "message": r.message, "created_at": r.created_at.isoformat()}
                for r in rows
            ]
        return {"items": items}

    return app


async def create_peer_schema(url: str) -> None:
    """Create the CRUD peer's table (the bench driver calls this once per database)."""
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        if url.startswith("sqlite"):  # as Keel's own file: readers never block the writer
            await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()


def crud_from_environment() -> FastAPI:
    """uvicorn's factory for the CRUD peer's workers."""
    return crud_app(os.environ["PEER_DATABASE_URL"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["bare", "crud"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    target = "peers:bare" if args.peer == "bare" else "peers:crud_from_environment"
    uvicorn.run(
        target,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        factory=args.peer == "crud",
        log_level="warning",
        access_log=False,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
    )


if __name__ == "__main__":
    main()
