"""Text a database cannot take is refused at the edge, the same way on SQLite and PostgreSQL.

And filenames: a NUL in one is refused at upload (nothing stored); a
non-ASCII one comes back in ``filename*`` (RFC 8187) with the exact bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.app import World

from keel.db.engine import Database
from keel.db.tables import Evidence, Recognition
from keel.domain import orgs
from keel.errors import InvalidInput

PROBLEM = "application/problem+json"
VALIDATION = "https://keel.dev/problems/validation"
BOUNDARY = b"k33l-b0undary"


def multipart(filename: bytes, content: bytes) -> bytes:
    return (
        b"--"
        + BOUNDARY
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--"
        + BOUNDARY
        + b"--\r\n"
    )


async def upload(client: httpx.AsyncClient, world: World, filename: bytes) -> httpx.Response:
    return await client.post(
        "/v1/evidence",
        content=multipart(filename, b"evidence bytes"),
        headers={
            **world.alice.headers,
            "Content-Type": "multipart/form-data; boundary=" + BOUNDARY.decode(),
        },
    )


async def count(app: FastAPI, table: type[Evidence] | type[Recognition]) -> int:
    async with app.state.services.database.read() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def assert_validation_problem(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == VALIDATION
    assert field in [error["field"] for error in body["errors"]]


@pytest.mark.parametrize("filename", [b"a\x00b.txt", b"bell\x07tab\t.txt", b"\xff.txt", b"n" * 300])
async def test_a_filename_no_database_or_header_can_take_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, world: World, app: FastAPI, filename: bytes
) -> None:
    response = await upload(client, world, filename)
    assert_validation_problem(response, "file.filename")
    assert await count(app, Evidence) == 0
    blobs = Path(app.state.services.settings.storage_dir)
    assert not [p for p in blobs.rglob("*") if p.is_file()]  # refused before a byte was stored


async def test_a_non_ascii_filename_downloads_with_filename_star_and_the_exact_bytes(
    client: httpx.AsyncClient, world: World
) -> None:
    name = 'Prüfbericht "final" 日本.txt'
    created = await upload(client, world, name.encode())
    assert created.status_code == 201, created.text
    assert created.json()["filename"] == name
    download = await client.get(
        f"/v1/evidence/{created.json()['id']}/content", headers=world.bob.headers
    )
    assert download.status_code == 200
    assert download.content == b"evidence bytes"
    assert hashlib.sha256(download.content).hexdigest() == created.json()["sha256"]
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Pr_fbericht _final_ __.txt"; ')
    extended = disposition.split("filename*=", 1)[1]
    assert extended.startswith("UTF-8''")
    assert unquote(extended.removeprefix("UTF-8''")) == name


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"recipient_id": "%s", "message": "hi\\u0000there"}', "body.message"),
        ('{"recipient_id": "%s", "message": "hi \\ud800"}', "body.message"),
        ('{"recipient_id": "%s", "message": "bell\\u0007"}', "body.message"),
        ('{"recipient_id": "%s", "message": "hi", "category": "a\\u0000"}', "body.category"),
        ('{"recipient_id": "%s", "message": "hi", "category": "two\\nlines"}', "body.category"),
        ('{"recipient_id": "%s\\u0000", "message": "hi"}', "body.recipient_id"),
        (
            '{"recipient_id": "%s", "message": "hi", "evidence_ids": ["\\u0000"]}',
            "body.evidence_ids.0",
        ),
    ],
)
async def test_bad_text_in_a_recognition_is_refused_before_the_database(
    client: httpx.AsyncClient, world: World, app: FastAPI, body: str, field: str
) -> None:
    response = await client.post(
        "/v1/recognitions",
        content=(body % world.bob.id).encode(),
        headers={**world.alice.headers, "Content-Type": "application/json"},
    )
    assert_validation_problem(response, field)
    assert await count(app, Recognition) == 0


async def test_free_text_keeps_its_line_breaks_and_tabs(
    client: httpx.AsyncClient, world: World
) -> None:
    message = "line one\r\nline two\n\tindented — ünïcode 😀"
    created = await client.post(
        "/v1/recognitions",
        json={"recipient_id": world.bob.id, "message": message},
        headers=world.alice.headers,
    )
    assert created.status_code == 201, created.text
    fetched = await client.get(
        f"/v1/recognitions/{created.json()['id']}", headers=world.bob.headers
    )
    assert fetched.json()["message"] == message


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/recognitions?giver_id=%00", "query.giver_id"),
        ("/v1/recognitions?recipient_id=a%01b", "query.recipient_id"),
        ("/v1/recognitions?cursor=%00", "query.cursor"),
        ("/v1/users?cursor=%0a", "query.cursor"),
        ("/v1/audit?user_id=%00", "query.user_id"),
        ("/v1/audit?code=%00", "query.code.0"),
        ("/v1/recognitions/%00", "path.recognition_id"),
        ("/v1/evidence/%00/content", "path.evidence_id"),
        ("/v1/exports/%00", "path.export_id"),
    ],
)
async def test_bad_text_in_a_query_or_path_parameter_is_refused(
    client: httpx.AsyncClient, world: World, path: str, field: str
) -> None:
    response = await client.get(path, headers=world.admin.headers)
    assert_validation_problem(response, field)


async def test_json_nested_a_hundred_thousand_levels_is_refused_not_parsed(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = {**world.alice.headers, "Content-Type": "application/json"}
    huge = await client.post("/v1/recognitions", content=b"[" * 100_000, headers=headers)
    assert huge.status_code == 413
    assert huge.headers["content-type"] == PROBLEM
    deep = await client.post("/v1/recognitions", content=b"[" * 1000 + b"]" * 1000, headers=headers)
    assert deep.status_code == 422
    assert deep.json()["errors"][0]["code"] == "json_too_deep"
    keyed = await client.post(
        "/v1/exports",
        content=b'{"format": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        headers={**headers, "Idempotency-Key": "deep-1"},
    )
    assert keyed.status_code == 422  # before the idempotency fingerprint parses it


@pytest.mark.parametrize(
    ("org_name", "email", "display_name", "field"),
    [
        ("Org\x00", "a@b.test", "", "name"),
        ("Org", "a\x00@b.test", "", "email"),
        ("Org", "a@b.test", "Ann\x1b[31m", "display_name"),
        ("Org\ud800", "a@b.test", "", "name"),
    ],
)
async def test_names_given_to_the_cli_services_are_checked_the_same_way(
    database: Database, org_name: str, email: str, display_name: str, field: str
) -> None:
    async def create() -> None:
        async with database.write() as session:
            org = await orgs.create_org(session, org_name)
            await orgs.create_user(session, org.id, email, display_name=display_name)

    with pytest.raises(InvalidInput) as raised:
        await create()
    assert raised.value.extensions["field"] == field
