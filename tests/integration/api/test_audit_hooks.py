"""The guards' audit hooks: a reused idempotency key is recorded on the caller's chain."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from tests.support.app import World

from keel.db.tables_audit import AuditEvent


async def test_a_reused_idempotency_key_is_audited_once(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    headers = {**world.alice.headers, "Idempotency-Key": "reuse-me"}
    first = {"recipient_id": world.bob.id, "message": "one"}
    other = {"recipient_id": world.bob.id, "message": "another"}
    assert (await client.post("/v1/recognitions", json=first, headers=headers)).status_code == 201
    reused = await client.post("/v1/recognitions", json=other, headers=headers)
    assert reused.status_code == 422
    async with app.state.services.database.read() as session:
        events = list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.code == "idempotency.key_mismatch")
            )
        )
    assert len(events) == 1
    assert "reuse-me" not in str(events[0].__dict__)  # the key itself is not an audited field
