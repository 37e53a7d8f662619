"""Evidence uploads and downloads: streamed, exact, limited."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.app import World, app_for, make_settings, running, seed_world

from keel.db.tables import Evidence

PROBLEM = "application/problem+json"


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_multi_megabyte_upload_downloads_byte_for_byte(
    client: httpx.AsyncClient, world: World
) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 17)
    files = {"file": ("big.bin", payload, "application/octet-stream")}
    created = await client.post("/v1/evidence", files=files, headers=world.alice.headers)
    assert created.status_code == 201
    meta = created.json()
    assert set(meta) == {"id", "filename", "content_type", "size", "sha256", "created_at"}
    assert meta["size"] == len(payload)
    assert meta["sha256"] == hashlib.sha256(payload).hexdigest()
    assert meta["filename"] == "big.bin"
    download = await client.get(f"/v1/evidence/{meta['id']}/content", headers=world.bob.headers)
    assert download.status_code == 200
    assert download.content == payload
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["etag"] == f'"{meta["sha256"]}"'
    fetched = await client.get(f"/v1/evidence/{meta['id']}", headers=world.bob.headers)
    assert fetched.json() == meta


async def test_upload_over_the_limit_is_refused_and_nothing_is_stored(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(database_url, str(tmp_path / "blobs"), max_upload_bytes=1024 * 1024)
    app = app_for(settings)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)

        async def body() -> object:  # no Content-Length: the limit must hold while streaming
            boundary = b"b0undary"
            yield (
                b"--"
                + boundary
                + b'\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
            )
            yield b"Content-Type: application/octet-stream\r\n\r\n"
            for _ in range(40):
                yield os.urandom(64 * 1024)
            yield b"\r\n--" + boundary + b"--\r\n"

        response = await client.post(
            "/v1/evidence",
            content=body(),  # type: ignore[arg-type]
            headers={
                **world.alice.headers,
                "Content-Type": "multipart/form-data; boundary=b0undary",
            },
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["limit"] == 1024 * 1024
        listed_blobs = [p for p in stored_files(tmp_path / "blobs") if "evidence" in p.parts]
        assert listed_blobs == []
        assert stored_files(tmp_path / "blobs" / "tmp") == []
        async with app.state.services.database.read() as session:
            assert await session.scalar(select(func.count()).select_from(Evidence)) == 0


async def test_declared_oversized_body_is_refused_before_reading(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(database_url, str(tmp_path / "blobs"), max_upload_bytes=1000)
    app = app_for(settings)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        files = {"file": ("x.bin", b"x" * 200_000, "application/octet-stream")}
        response = await client.post("/v1/evidence", files=files, headers=world.alice.headers)
        assert response.status_code == 413


async def test_content_type_outside_the_allow_list_is_415(
    client: httpx.AsyncClient, world: World
) -> None:
    files = {"file": ("evil.html", b"<script>", "text/html")}
    response = await client.post("/v1/evidence", files=files, headers=world.alice.headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert "text/plain" in response.json()["allowed"]


async def test_non_multipart_upload_is_415_and_missing_field_is_400(
    client: httpx.AsyncClient, world: World
) -> None:
    raw = await client.post(
        "/v1/evidence",
        content=b"abc",
        headers={**world.alice.headers, "Content-Type": "text/plain"},
    )
    assert raw.status_code == 415
    wrong_field = await client.post(
        "/v1/evidence", files={"other": ("a.txt", b"a", "text/plain")}, headers=world.alice.headers
    )
    assert wrong_field.status_code == 400
    assert wrong_field.headers["content-type"] == PROBLEM


async def test_other_form_fields_before_the_file_are_skipped(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        "/v1/evidence",
        data={"note": "n" * 100_000},
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers=world.alice.headers,
    )
    assert response.status_code == 201
    assert response.json()["size"] == 5


async def test_delete_hides_the_file_and_removes_unshared_bytes(
    app: FastAPI, client: httpx.AsyncClient, world: World, tmp_path: Path
) -> None:
    files = {"file": ("a.txt", b"only copy", "text/plain")}
    eid = (await client.post("/v1/evidence", files=files, headers=world.alice.headers)).json()["id"]
    assert (
        await client.delete(f"/v1/evidence/{eid}", headers=world.bob.headers)
    ).status_code == 403
    assert (
        await client.delete(f"/v1/evidence/{eid}", headers=world.alice.headers)
    ).status_code == 204
    assert (await client.get(f"/v1/evidence/{eid}", headers=world.alice.headers)).status_code == 404
    assert (
        await client.get(f"/v1/evidence/{eid}/content", headers=world.alice.headers)
    ).status_code == 404
    assert [p for p in stored_files(tmp_path / "blobs") if "evidence" in p.parts] == []


async def test_identical_content_is_stored_once_and_survives_one_delete(
    client: httpx.AsyncClient, world: World
) -> None:
    files = {"file": ("a.txt", b"same bytes", "text/plain")}
    first = (await client.post("/v1/evidence", files=files, headers=world.alice.headers)).json()
    second = (await client.post("/v1/evidence", files=files, headers=world.alice.headers)).json()
    assert first["sha256"] == second["sha256"]
    assert first["id"] != second["id"]
    await client.delete(f"/v1/evidence/{first['id']}", headers=world.alice.headers)
    still = await client.get(f"/v1/evidence/{second['id']}/content", headers=world.alice.headers)
    assert still.content == b"same bytes"


async def test_recognition_can_carry_evidence(client: httpx.AsyncClient, world: World) -> None:
    files = {"file": ("a.txt", b"proof", "text/plain")}
    eid = (await client.post("/v1/evidence", files=files, headers=world.alice.headers)).json()["id"]
    body = {"recipient_id": world.bob.id, "message": "see attached", "evidence_ids": [eid]}
    created = await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
    assert created.status_code == 201
    assert created.json()["evidence_ids"] == [eid]
    listed = (await client.get("/v1/recognitions", headers=world.alice.headers)).json()
    assert listed["items"][0]["evidence_ids"] == [eid]
