"""The audit log seen through the API: events for domain writes, GET /v1/audit, no raw PII."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from tests.support.app import SECRET, World, add_member, make_settings, wait_for_export

from keel.audit import PublicKeys, verify
from keel.domain.principal import Role
from keel.settings import Settings
from keel.testing import capture_logs

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The export below must run: an in-process job worker."""
    return make_settings(database_url, str(tmp_path / "blobs"), inprocess_worker="on")


async def act(app: FastAPI, client: httpx.AsyncClient, world: World) -> dict[str, str]:
    """Exercise every audited write of the API as alice; returns the ids involved."""
    files = {"file": ("note.txt", b"evidence bytes", "text/plain")}
    evidence = (await client.post("/v1/evidence", files=files, headers=world.alice.headers)).json()
    body = {"recipient_id": world.bob.id, "message": "thanks", "evidence_ids": [evidence["id"]]}
    created = await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
    assert created.status_code == 201
    recognition = created.json()
    got = await client.get(f"/v1/evidence/{evidence['id']}/content", headers=world.alice.headers)
    assert got.content == b"evidence bytes"
    export = (
        await client.post("/v1/exports", json={"format": "json"}, headers=world.alice.headers)
    ).json()
    await wait_for_export(client, world.alice.headers, export["id"])
    download = await client.get(f"/v1/exports/{export['id']}/content", headers=world.alice.headers)
    assert download.status_code == 200
    deleted = await client.delete(
        f"/v1/recognitions/{recognition['id']}", headers=world.admin.headers
    )
    assert deleted.status_code == 204
    second = await client.post(
        "/v1/evidence", files={"file": ("b.txt", b"b", "text/plain")}, headers=world.alice.headers
    )
    assert (
        await client.delete(f"/v1/evidence/{second.json()['id']}", headers=world.alice.headers)
    ).status_code == 204
    return {"evidence": evidence["id"], "recognition": recognition["id"], "export": export["id"]}


async def all_events(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(100):
        query = dict(params, limit="3") | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/audit", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def test_every_audited_write_has_its_event_and_the_log_verifies(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    ids = await act(app, client, world)
    events = await all_events(client, world.admin.headers)
    codes = [e["code"] for e in events]
    for code in (
        "evidence.uploaded",
        "recognition.created",
        "evidence.downloaded",
        "export.requested",
        "export.completed",
        "export.downloaded",
        "recognition.deleted",
        "evidence.deleted",
        "auth.succeeded",
    ):
        assert code in codes, code
    assert len({e["id"] for e in events}) == len(events)  # paging never repeats
    chains: dict[object, list[int]] = {}
    for event in events:
        chains.setdefault(event["chain"], []).append(int(event["seq"]))  # type: ignore[call-overload]
    for seqs in chains.values():  # each of the organisation's chains gap-free
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    created = next(e for e in events if e["code"] == "recognition.created")
    assert created["fields"] == {"recognition_id": ids["recognition"], "evidence_count": 1}
    completed = next(e for e in events if e["code"] == "export.completed")
    assert completed["fields"]["status"] == "succeeded"  # type: ignore[index]
    services = app.state.services
    report = await verify(services.database, PublicKeys([services.audit.signer.public_key]))
    assert report.ok, report.broken


async def test_a_refused_write_records_no_event(client: httpx.AsyncClient, world: World) -> None:
    body = {"recipient_id": world.mallory.id, "message": "cross-tenant"}
    refused = await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
    assert refused.status_code == 422
    events = await all_events(client, world.admin.headers, code="recognition.created")
    assert events == []


async def test_members_are_refused_and_admins_see_only_their_organisation(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    await act(app, client, world)
    member = await client.get("/v1/audit", headers=world.alice.headers)
    assert member.status_code == 403
    assert member.headers["content-type"] == PROBLEM
    assert (await client.get("/v1/audit")).status_code == 401
    boss_b = await add_member(
        app.state.services.database, world.mallory.org_id, "boss@b.test", Role.ADMIN
    )
    theirs = await all_events(client, boss_b.headers)
    assert {e["code"] for e in theirs} == {"auth.succeeded"}  # only their own sign-in
    ours = await all_events(client, world.admin.headers)
    assert not {e["id"] for e in theirs} & {e["id"] for e in ours}


async def test_filters_by_code_user_and_time(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    await act(app, client, world)
    uploads = await all_events(client, world.admin.headers, code="evidence.uploaded")
    assert [e["code"] for e in uploads] == ["evidence.uploaded"] * 2
    by_admin = await all_events(client, world.admin.headers, user_id=world.admin.id)
    assert {e["code"] for e in by_admin} >= {"recognition.deleted"}
    assert "evidence.uploaded" not in {e["code"] for e in by_admin}
    future = await all_events(client, world.admin.headers, since="2999-01-01T00:00:00Z")
    assert future == []
    bad = await client.get("/v1/audit", params={"code": "no.such"}, headers=world.admin.headers)
    assert bad.status_code == 422


async def test_no_raw_emails_tokens_ids_or_ips_are_stored(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    with capture_logs() as logs:
        await act(app, client, world)
        await client.get("/v1/users/me", headers={"Authorization": "Bearer keel_wrong-token-value"})
        await app.state.services.audit.authentication.flush()
    dump: list[str] = []
    async with app.state.services.database.read() as session:
        for table in ("audit_events", "audit_chains", "audit_digests"):
            for row in await session.execute(text(f"SELECT * FROM {table}")):
                dump.extend(str(value) for value in row)
    stored = "\n".join(dump)
    logged = "\n".join(str(entry) for entry in logs)
    assert "auth.failed" in stored
    raw = [world.alice.token, world.admin.token, "keel_wrong-token-value", SECRET]
    raw += [m.id for m in (world.admin, world.alice, world.bob, world.mallory)]
    raw += [world.alice.org_id, world.mallory.org_id, "127.0.0.1", "@a.test", "@b.test"]
    for value in raw:
        assert value not in stored, value
    for value in [*raw[:3], "127.0.0.1", "@a.test", "@b.test"]:
        assert value not in logged, value
    assert not re.search(r"[^@\s\"]+@[^@\s\"]+\.[a-z]+", stored)


async def test_authentication_failures_are_counted_then_flushed_as_one_event(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    for _ in range(5):
        response = await client.get("/v1/users/me", headers={"Authorization": "Bearer keel_nope"})
        assert response.status_code == 401
    await client.get("/v1/users/me", headers={"Authorization": "Basic eA=="})
    authentication = app.state.services.audit.authentication
    assert authentication.pending == 6
    assert await authentication.flush() == 6
    assert authentication.pending == 0
    async with app.state.services.database.read() as session:
        rows = (
            await session.execute(
                text("SELECT chain_id, fields, ip FROM audit_events WHERE code = 'auth.failed'")
            )
        ).all()
    assert {row[0] for row in rows} == {"system"}
    counts = sorted(row[1] for row in rows)
    assert '"count":5' in counts[0] or '"count":5' in counts[1]
    assert all(row[2] and row[2].startswith("dev:") for row in rows)
