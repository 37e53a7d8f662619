"""Failures answer problems: 500 without internals, 503 with Retry-After for dependencies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, select
from tests.support.app import World, app_for, make_settings, running, seed_world
from tests.support.databases import Templates, empty_database, fresh_database
from tests.support.proxy import TcpProxy
from tests.support.services import PG_HOST, PG_PORT

from keel.db.engine import Database
from keel.db.prepared import PreparedRead
from keel.db.tables import Org
from keel.errors import DatabaseUnavailable

PROBLEM = "application/problem+json"


async def test_unexpected_exceptions_answer_a_generic_500_problem(
    app: FastAPI, client: httpx.AsyncClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as raw:
        response = await raw.get("/v1/boom", headers=world.alice.headers)
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert "secret internal detail" not in response.text
    assert response.json()["type"].endswith("/internal")


async def test_storage_failure_is_503_and_recognitions_keep_working(
    client: httpx.AsyncClient, world: World, tmp_path: Path
) -> None:
    blobs = tmp_path / "blobs"
    if blobs.exists():
        blobs.rename(tmp_path / "blobs-gone")
    blobs.write_bytes(b"not a directory")  # the store can no longer create anything under it
    files = {"file": ("a.txt", b"hello", "text/plain")}
    upload = await client.post("/v1/evidence", files=files, headers=world.alice.headers)
    assert upload.status_code == 503
    assert upload.headers["content-type"] == PROBLEM
    assert int(upload.headers["retry-after"]) >= 1
    body = {"recipient_id": world.bob.id, "message": "still works"}
    assert (
        await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
    ).status_code == 201


@pytest.fixture
def proxied_postgres(templates: Templates, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with fresh_database(templates, "postgres", tmp_path) as url:
        yield url, url.rsplit("/", 1)[1]


async def test_database_outage_is_503_with_retry_after_then_recovers(
    proxied_postgres: tuple[str, str], tmp_path: Path
) -> None:
    direct_url, name = proxied_postgres
    proxy = await TcpProxy(PG_HOST, PG_PORT).start()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{name}"
    settings = make_settings(url, str(tmp_path / "blobs"), database_timeout_seconds=1.0)
    app = app_for(settings)
    try:
        async with running(app) as client:
            direct = Database(direct_url)
            world = await seed_world(direct)
            await direct.dispose()
            ok = await client.get("/v1/users/me", headers=world.alice.headers)
            assert ok.status_code == 200
            await proxy.cut()
            for path in ("/v1/recognitions", "/v1/users/me"):
                down = await client.get(path, headers=world.alice.headers)
                assert down.status_code == 503, down.text
                assert down.headers["content-type"] == PROBLEM
                assert int(down.headers["retry-after"]) >= 1
            await proxy.restore()
            for _ in range(50):  # recovery without a restart, bounded
                if (
                    await client.get("/v1/users/me", headers=world.alice.headers)
                ).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("Keel did not recover after the database came back")
    finally:
        await proxy.cut()


async def _session_read(database: Database) -> None:
    async with database.read() as session:
        await session.execute(select(Org))


async def _prepared_read(database: Database) -> None:
    """On the driver connection (asyncpg's, aiosqlite's): the driver's own error, unwrapped."""
    await database.fetch(PreparedRead(select(Org.id).where(Org.id == bindparam("id"))), {"id": "x"})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("read", [_session_read, _prepared_read], ids=["session", "prepared"])
def test_an_unmigrated_database_says_to_migrate_not_that_it_is_down(
    backend: str, read: Callable[[Database], Awaitable[None]], tmp_path: Path
) -> None:
    async def read_orgs(url: str) -> None:
        database = Database(url)
        try:
            await read(database)
        finally:
            await database.dispose()

    with (
        empty_database(backend, tmp_path) as url,
        pytest.raises(DatabaseUnavailable, match="keel migrate apply"),
    ):
        asyncio.run(read_orgs(url))
