"""Property: however retries, crashes and key reuse interleave, each key executes once.

Hypothesis draws a schedule of steps over a few keys: a request arrives (with
one of two payloads, and a fate: it will succeed, crash, fail and roll back,
or be refused while running), a pending request takes its next step, or the
clock moves on (past leases, sometimes). Each step is what the middleware and
a route do, at the store level, with real transactions on SQLite and
PostgreSQL and an injected clock. After any schedule, the recognitions that
exist are exactly one per key whose request succeeded, and every replay
answers with that request's recognition.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from keel.db.engine import Database
from keel.db.tables import Recognition
from keel.domain import orgs, recognitions
from keel.domain.principal import Plan, Principal, Role
from keel.guard.idempotency import (
    ClaimResult,
    IdempotencyLeaseLost,
    IdempotencyStore,
    KeyRef,
    MemoryIdempotencyStore,
    StoredResponse,
    store_for,
)

LEASE = 60.0
KEYS = ("k0", "k1")
FATES = ("succeed", "crash", "fail", "refuse")


@dataclass
class Pending:
    ref: KeyRef
    owner: str
    fingerprint: str
    fate: str


@dataclass
class Model:
    succeeded: dict[str, str] = field(default_factory=dict)  # key -> recognition id
    refused: set[str] = field(default_factory=set)
    pending: list[Pending] = field(default_factory=list)


arrive = st.tuples(
    st.just("arrive"), st.sampled_from(KEYS), st.sampled_from(("p0", "p1")), st.sampled_from(FATES)
)
step = st.tuples(st.just("step"), st.integers(0, 7))
tick = st.tuples(st.just("tick"), st.sampled_from((1.0, 30.0, LEASE + 1)))
schedules = st.lists(st.one_of(arrive, step, tick), min_size=1, max_size=25)


async def _principal(database: Database) -> tuple[Principal, str]:
    async with database.write() as session:
        org = await orgs.create_org(session, f"org-{uuid.uuid4().hex[:6]}")
        giver = await orgs.create_user(session, org.id, f"g-{uuid.uuid4().hex}@p.test")
        recipient = await orgs.create_user(session, org.id, f"r-{uuid.uuid4().hex}@p.test")
    return Principal(giver.id, org.id, Role.MEMBER, "token", Plan.FREE), recipient.id


async def run_schedule(
    url: str, schedule: list[tuple[object, ...]], *, memory: bool = False
) -> None:
    """``memory``: the keys in a :class:`MemoryIdempotencyStore`, joining the business
    transactions of ``url``'s database as the SQL stores' completions do."""
    database = Database(url)
    try:
        await _check(database, schedule, memory=memory)
    finally:
        await database.dispose()


async def _check(database: Database, schedule: list[tuple[object, ...]], *, memory: bool) -> None:
    store: IdempotencyStore = (
        MemoryIdempotencyStore(lease_seconds=LEASE, retention_seconds=10**7)
        if memory
        else store_for(database, lease_seconds=LEASE, retention_seconds=10**7)
    )
    principal, recipient_id = await _principal(database)
    now = datetime(2026, 11, 29, tzinfo=UTC)
    model = Model()
    owners = 0
    for action in schedule:
        if action[0] == "tick":
            now += timedelta(seconds=float(action[1]))  # type: ignore[arg-type]
        elif action[0] == "arrive":
            _, key, payload, fate = action
            owners += 1
            ref = KeyRef(principal.user_id, principal.org_id, "POST /v1/recognitions", str(key))
            request = Pending(ref, f"owner-{owners}", f"fp-{payload}", str(fate))
            claim = await store.claim(
                ref, owner=request.owner, fingerprint=request.fingerprint, now=now
            )
            if claim.owned:
                model.pending.append(request)
            elif claim.result is ClaimResult.COMPLETED and claim.fingerprint == request.fingerprint:
                assert claim.response is not None
                if claim.response.status == 201:
                    assert json.loads(claim.response.body)["id"] == model.succeeded[str(key)]
                else:
                    assert str(key) in model.refused
        elif model.pending:
            request = model.pending.pop(int(action[1]) % len(model.pending))  # type: ignore[call-overload]
            await _run(store, database, principal, recipient_id, request, model, now)
    async with database.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Recognition)
            .where(Recognition.giver_id == principal.user_id)
        )
    assert count == len(model.succeeded)


async def _run(
    store: IdempotencyStore,
    database: Database,
    principal: Principal,
    recipient_id: str,
    request: Pending,
    model: Model,
    now: datetime,
) -> None:
    key = request.ref.key
    if request.fate == "crash":
        return  # the process died: its claim stays until the lease runs out
    if request.fate == "refuse":
        refused = StoredResponse(422, (), b"{}")
        if await store.settle(
            request.ref,
            owner=request.owner,
            fingerprint=request.fingerprint,
            response=refused,
            now=now,
        ):
            model.refused.add(key)
        return
    new = recognitions.NewRecognition(recipient_id=recipient_id, message="thanks")
    try:
        async with database.write() as session:
            record = await recognitions.create(session, principal, new)
            body = json.dumps({"id": record.id}).encode()
            await store.complete(
                session,
                request.ref,
                owner=request.owner,
                fingerprint=request.fingerprint,
                response=StoredResponse(201, (), body),
                now=now,
            )
            if request.fate == "fail":
                raise RuntimeError("rolled back after the completion was written")
    except IdempotencyLeaseLost:
        return
    except RuntimeError:
        await store.release(request.ref, owner=request.owner)
        return
    assert key not in model.succeeded, "a key executed twice"
    model.succeeded[key] = record.id


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=schedules)
# The interleaving that matters most, always tried: a request hangs past its lease,
# a retry takes the key over, then both try to finish.
@example(
    schedule=[
        ("arrive", "k0", "p0", "succeed"),
        ("tick", LEASE + 1),
        ("arrive", "k0", "p0", "succeed"),
        ("step", 0),
        ("step", 0),
        ("arrive", "k0", "p0", "succeed"),
    ]
)
# Every store: the SQL one of the database, and the memory one joined to its transactions.
@pytest.mark.parametrize("memory", [False, True], ids=["sql_store", "memory_store"])
def test_recognitions_equal_the_keys_whose_request_succeeded(
    database_url: str, memory: bool, schedule: list[tuple[object, ...]]
) -> None:
    asyncio.run(run_schedule(database_url, schedule, memory=memory))


@pytest.mark.parametrize("fate", ["succeed", "fail", "refuse", "crash"])
def test_each_fate_alone(database_url: str, fate: str) -> None:
    asyncio.run(
        run_schedule(
            database_url,
            [("arrive", "k0", "p0", fate), ("step", 0), ("arrive", "k0", "p0", "succeed")],
        )
    )
