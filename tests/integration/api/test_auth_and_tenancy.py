"""Authentication, token revocation and tenant isolation."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.support.app import World, add_member

from keel.db.tables import ApiToken
from keel.domain.tokens import revoke_token

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer keel_not-a-real-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ],
)
async def test_missing_or_bad_credentials_are_401_problems(
    client: httpx.AsyncClient, world: World, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/recognitions", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401


async def test_revoked_token_stops_working(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    assert (await client.get("/v1/users/me", headers=world.alice.headers)).status_code == 200
    database = app.state.services.database
    async with database.read() as session:
        token_id = (
            await session.scalars(select(ApiToken.id).where(ApiToken.user_id == world.alice.id))
        ).one()
    async with database.write() as session:
        await revoke_token(session, token_id)
    assert (await client.get("/v1/users/me", headers=world.alice.headers)).status_code == 401


async def test_me_and_users_are_scoped_to_the_callers_org(
    client: httpx.AsyncClient, world: World
) -> None:
    me = (await client.get("/v1/users/me", headers=world.alice.headers)).json()
    assert me["id"] == world.alice.id
    assert me["role"] == "member"
    users = (await client.get("/v1/users", headers=world.alice.headers)).json()
    ids = {u["id"] for u in users["items"]}
    assert ids == {world.admin.id, world.alice.id, world.bob.id}
    theirs = (await client.get("/v1/users", headers=world.mallory.headers)).json()
    assert {u["id"] for u in theirs["items"]} == {world.mallory.id}


async def test_another_org_cannot_read_list_or_delete_recognitions(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {"recipient_id": world.bob.id, "message": "private"}
    rid = (await client.post("/v1/recognitions", json=body, headers=world.alice.headers)).json()[
        "id"
    ]
    missing = "01a22537-0000-7000-8000-000000000000"
    for method, path in (("GET", f"/v1/recognitions/{rid}"), ("DELETE", f"/v1/recognitions/{rid}")):
        theirs = await client.request(method, path, headers=world.mallory.headers)
        nothing = await client.request(
            method, path.replace(rid, missing), headers=world.mallory.headers
        )
        assert theirs.status_code == nothing.status_code == 404
        assert theirs.json()["detail"] == nothing.json()["detail"]
    listed = (await client.get("/v1/recognitions", headers=world.mallory.headers)).json()
    assert listed["items"] == []
    by_filter = await client.get(
        f"/v1/recognitions?recipient_id={world.bob.id}", headers=world.mallory.headers
    )
    assert by_filter.json()["items"] == []
    still = await client.get(f"/v1/recognitions/{rid}", headers=world.alice.headers)
    assert still.status_code == 200


async def test_another_org_cannot_see_download_or_delete_evidence_or_exports(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    files = {"file": ("note.txt", b"secret bytes", "text/plain")}
    eid = (await client.post("/v1/evidence", files=files, headers=world.alice.headers)).json()["id"]
    xid = (
        await client.post("/v1/exports", json={"format": "csv"}, headers=world.alice.headers)
    ).json()["id"]
    for path in (
        f"/v1/evidence/{eid}",
        f"/v1/evidence/{eid}/content",
        f"/v1/exports/{xid}",
        f"/v1/exports/{xid}/content",
    ):
        response = await client.get(path, headers=world.mallory.headers)
        assert response.status_code == 404, path
        assert b"secret" not in response.content
    assert (
        await client.delete(f"/v1/evidence/{eid}", headers=world.mallory.headers)
    ).status_code == 404
    assert (
        await client.get(f"/v1/evidence/{eid}/content", headers=world.alice.headers)
    ).content == b"secret bytes"
    # and a recognition in org B cannot reference org A's evidence
    trent = await add_member(app.state.services.database, world.mallory.org_id, "trent@b.test")
    body = {"recipient_id": trent.id, "message": "x", "evidence_ids": [eid]}
    refused = await client.post("/v1/recognitions", json=body, headers=world.mallory.headers)
    assert refused.status_code == 422
    assert refused.json()["field"] == "evidence_ids"
