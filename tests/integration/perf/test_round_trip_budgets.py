"""Database round trips per request type stay within their budget (issue 19).

The COUNT of statements each request sends to the database, not its time: a
round trip costs the same on every machine relative to the rest of the
request, and a new one slipped onto a hot path shows here at once. Budgets are
the counts measured when the test was written; lower them when a round trip
is cut, never raise one without saying in the row what the new trip buys.
Counted after warm-up, the smallest of a few identical requests, so a
background task's statement landing inside one window cannot fail the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from tests.support.app import World, app_for, make_settings, running, seed_world
from tests.support.roundtrips import RoundTrips, counting_round_trips

# request type -> {backend: budget}, measured on 2026-12-03 (bench/RESULTS.md, "End-to-end
# requests (issue 19)"); what each round trip buys is in the README ("What each round trip
# buys"). BEGIN and COMMIT are round trips of their own.
BUDGETS: dict[str, dict[str, int]] = {
    # Liveness answers from the process alone: no database at all.
    "GET /live": {"postgres": 0, "sqlite": 0},
    # The caller's user row (current role and organisation): one statement on its own
    # (PostgreSQL autocommit: READ COMMITTED gives a lone statement its own snapshot; SQLite
    # its implicit transaction), no BEGIN and COMMIT around it. The token lookup itself is
    # served from the auth cache (revocation seen within auth_cache_seconds).
    "GET /v1/users/me": {"postgres": 1, "sqlite": 1},
    # The page of recognitions scoped to the caller's organisation, joined to its evidence
    # links: one statement on its own on both (a lone statement is its own snapshot).
    "GET /v1/recognitions": {"postgres": 1, "sqlite": 1},
    # Read the key (one statement: a replay is answered here); the claim as one statement
    # on its own (PostgreSQL: insert the claim, or return the row in its way, with relaxed
    # durability; SQLite: the insert alone, told the key was absent) so a concurrent
    # duplicate waits instead of running twice; then ONE transaction: BEGIN (IMMEDIATE on
    # SQLite), INSERT the recognition from its recipient's row in the caller's organisation,
    # the claim's completion with the stored response, then the audit append last (the chain
    # head is locked from it to the commit): on PostgreSQL one statement (head locked, hash
    # computed, event inserted, head moved), on SQLite the event inserted from the head and
    # the head's move; COMMIT. The record, its audit event and the replayable answer commit
    # together or not at all.
    "POST /v1/recognitions (keyed)": {"postgres": 7, "sqlite": 8},
    # The stored response found by the key read: no new write (one statement).
    "POST /v1/recognitions (replay)": {"postgres": 1, "sqlite": 1},
    # The storage quota read before streaming (BEGIN, SUM, COMMIT: refuse early), then one
    # transaction (BEGIN, SUM again: the quota against what is stored once the upload has
    # streamed, INSERT evidence, the audit append — one statement on PostgreSQL, two on
    # SQLite — COMMIT).
    "POST /v1/evidence": {"postgres": 8, "sqlite": 9},
}

WARM_UP = 3
MEASURED = 3

Send = Callable[[httpx.AsyncClient, World], Awaitable[httpx.Response]]


def _recognition(world: World) -> dict[str, str]:
    return {"recipient_id": world.bob.id, "message": "thanks for the review"}


async def _live(client: httpx.AsyncClient, _world: World) -> httpx.Response:
    return await client.get("/live")


async def _me(client: httpx.AsyncClient, world: World) -> httpx.Response:
    return await client.get("/v1/users/me", headers=world.alice.headers)


async def _list(client: httpx.AsyncClient, world: World) -> httpx.Response:
    return await client.get("/v1/recognitions?limit=20", headers=world.alice.headers)


async def _keyed_post(client: httpx.AsyncClient, world: World) -> httpx.Response:
    headers = {**world.alice.headers, "Idempotency-Key": str(uuid.uuid4())}
    return await client.post("/v1/recognitions", json=_recognition(world), headers=headers)


REPLAYED_KEY = "round-trip-budget-replay"


async def _replay(client: httpx.AsyncClient, world: World) -> httpx.Response:
    headers = {**world.alice.headers, "Idempotency-Key": REPLAYED_KEY}
    return await client.post("/v1/recognitions", json=_recognition(world), headers=headers)


async def _evidence(client: httpx.AsyncClient, world: World) -> httpx.Response:
    files = {"file": ("note.txt", b"evidence of a good deed\n", "text/plain")}
    return await client.post("/v1/evidence", files=files, headers=world.alice.headers)


SENDERS: dict[str, tuple[Send, int]] = {
    "GET /live": (_live, 200),
    "GET /v1/users/me": (_me, 200),
    "GET /v1/recognitions": (_list, 200),
    "POST /v1/recognitions (keyed)": (_keyed_post, 201),
    "POST /v1/recognitions (replay)": (_replay, 201),
    "POST /v1/evidence": (_evidence, 201),
}


async def measure(
    client: httpx.AsyncClient, world: World, counter: RoundTrips, send: Send, status: int
) -> int:
    """The fewest round trips one of ``MEASURED`` identical requests made, after warm-up."""
    for _ in range(WARM_UP):
        assert (await send(client, world)).status_code == status
    counts = []
    for _ in range(MEASURED):
        before = counter.total()
        response = await send(client, world)
        counts.append(counter.total() - before)
        assert response.status_code == status, response.text
    return min(counts)


async def measure_all(database_url: str, workdir: Path) -> dict[str, int]:
    """Round trips per request type on a Keel app with the serving defaults for caching."""
    settings = make_settings(database_url, str(workdir / "blobs"), auth_cache_seconds=5.0)
    with counting_round_trips() as counter:
        app = app_for(settings)
        async with running(app) as client:
            world = await seed_world(app.state.services.database)
            return {
                name: await measure(client, world, counter, send, status)
                for name, (send, status) in SENDERS.items()
            }


async def test_no_request_type_makes_more_round_trips_than_its_budget(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    counts = await measure_all(database_url, tmp_path)
    over = {
        name: f"{count} > {BUDGETS[name][backend]}"
        for name, count in counts.items()
        if count > BUDGETS[name][backend]
    }
    assert not over, f"round trips over budget on {backend}: {over} (all: {counts})"
