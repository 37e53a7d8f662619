"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from keel.db.engine import Database
from keel.settings import Settings
from tests.support.app import World, app_for, make_settings, running, seed_world
from tests.support.databases import BACKENDS, Templates, fresh_database
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    found = Templates(tmp_path_factory.mktemp("templates"))
    yield found
    found.cleanup()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real S3 server for the session; tests keep to their own key prefixes."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(templates: Templates, backend: str, tmp_path: Path) -> Iterator[str]:
    with fresh_database(templates, backend, tmp_path) as url:
        yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, str(tmp_path / "blobs"))


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return app_for(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient) -> World:
    return await seed_world(app.state.services.database)
