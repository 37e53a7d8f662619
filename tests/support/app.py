"""A Keel app under test, with two seeded organisations, reached over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI

from keel import migrations
from keel.app import create_app
from keel.clock import Clock
from keel.db.engine import Database
from keel.domain import orgs
from keel.domain.principal import Role
from keel.domain.tokens import issue_token
from keel.settings import Settings
from keel.testing import ManualClock

SECRET = "test-secret-that-is-long-enough-0123456789"


@dataclass
class Member:
    id: str
    org_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    """Organisation A (admin, alice, bob) and organisation B (mallory)."""

    admin: Member
    alice: Member
    bob: Member
    mallory: Member
    extra: dict[str, Member] = field(default_factory=dict)


async def add_member(
    database: Database, org_id: str, email: str, role: Role = Role.MEMBER
) -> Member:
    async with database.write() as session:
        user = await orgs.create_user(session, org_id, email, role=role)
        issued = await issue_token(session, SECRET.encode(), user.id)
    return Member(id=user.id, org_id=org_id, token=issued.token)


async def seed_database(url: str) -> World:
    """:func:`seed_world` through a connection pool of its own, closed after.

    For tests whose server runs in another process: the seeding must leave no
    connection of the test's event loop behind.
    """
    database = Database(url)
    try:
        return await seed_world(database)
    finally:
        await database.dispose()


async def seeded_world_at(url: str) -> World:
    """Migrate the empty database at ``url`` to head, seed the world, close the pool.

    For process and fault tests whose server reaches a database of its own (often
    through a proxy): ``url`` is the direct one. The same Alembic upgrade as
    ``keel migrate upgrade``, run here rather than in a process of its own.
    """
    database = Database(url)
    try:
        await migrations.upgrade(database)
        return await seed_world(database)
    finally:
        await database.dispose()


async def seed_world(database: Database) -> World:
    async with database.write() as session:
        org_a = await orgs.create_org(session, "Org A", plan="team")
        org_b = await orgs.create_org(session, "Org B")
    return World(
        admin=await add_member(database, org_a.id, "admin@a.test", Role.ADMIN),
        alice=await add_member(database, org_a.id, "alice@a.test"),
        bob=await add_member(database, org_a.id, "bob@a.test"),
        mallory=await add_member(database, org_b.id, "mallory@b.test"),
    )


def seeded_world(database_url: str) -> World:
    """``seed_world`` from synchronous code (process tests, benchmarks)."""
    return asyncio.run(seed_database(database_url))


def make_settings(database_url: str, storage_dir: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": SECRET,
        "storage_dir": storage_dir,
        "auth_cache_seconds": 0,
        # Keys are required on some routes by default; the idempotency tests ask for
        # that explicitly, and every other test posts without a key (issue 4).
        "idempotency_required_routes": [],
        # Exports run on the job queue; tests that need them done turn the worker on.
        "inprocess_worker": "off",
        "jobs_poll_seconds": 0.05,
        # A loaded test machine lags; only tests about shedding should ever be shed.
        "shed_max_loop_lag_seconds": 60.0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and hand out a client that speaks ASGI to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
            yield client


def app_for(settings: Settings, clock: Clock | None = None) -> FastAPI:
    return create_app(settings, clock=clock or ManualClock())


async def wait_for_export(
    client: httpx.AsyncClient, headers: dict[str, str], export_id: str, *, attempts: int = 300
) -> dict[str, object]:
    """Poll an export until it finishes (bounded: ``attempts`` × 50 ms)."""
    for _ in range(attempts):
        body: dict[str, object] = (
            await client.get(f"/v1/exports/{export_id}", headers=headers)
        ).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"export {export_id} did not finish")
