"""The ``database`` breaker as ``Database`` feeds it, and the error boundary's answers.

The guard around every session counts a failure for each error that means the database
cannot serve, a success for everything the database answered (a duplicate is an answer),
nothing for a cancelled block; once open, it refuses at once with ``503
database-unavailable`` and a ``Retry-After`` that counts down the wait. The blocks below
raise before they touch a connection, so nothing here does I/O; the clock is a manual one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.db.engine import BREAKER_OPEN, Database
from keel.errors import DatabaseUnavailable, NotFound
from keel.http.boundary import ErrorBoundaryMiddleware
from keel.http.problems import install as install_problems
from keel.resilience import (
    BreakerConfig,
    BreakerGate,
    BreakerState,
    CircuitBreaker,
    ResilienceMetrics,
)
from keel.testing import ManualClock

PROBLEM = "application/problem+json"


def starting_up() -> exc.DBAPIError:
    """A 57P03 as a session meets it: SQLAlchemy's generic ``DBAPIError`` around it."""
    driver = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(driver), driver)
    adapted.__cause__ = driver
    error = exc.DBAPIError("SELECT 1", None, adapted)
    error.__cause__ = adapted
    return error


def duplicate() -> exc.IntegrityError:
    driver = asyncpg.exceptions.UniqueViolationError("duplicate key")
    error = exc.IntegrityError("INSERT", None, driver)
    error.__cause__ = driver
    return error


@dataclass(frozen=True)
class Guarded:
    """A database behind its breaker, and the clock the breaker waits on."""

    database: Database
    breaker: CircuitBreaker
    clock: ManualClock


@pytest.fixture
async def guarded() -> AsyncIterator[Guarded]:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "database",
        BreakerConfig(
            window_size=4,
            minimum_number_of_calls=4,
            wait_duration_in_open_state=1.0,
            max_wait_duration_in_open_state=4.0,
            permitted_number_of_calls_in_half_open_state=1,
        ),
        clock=clock,
        metrics=ResilienceMetrics(CollectorRegistry()),
    )
    database = Database("sqlite+aiosqlite:///:memory:", breaker=BreakerGate(breaker))
    try:
        yield Guarded(database, breaker, clock)
    finally:
        await database.dispose()


async def raising(database: Database, error: BaseException) -> BaseException:
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - each case says what
        async with database.read():
            raise error
    return caught.value


async def test_unavailability_opens_the_breaker_which_then_refuses_without_a_call(
    guarded: Guarded,
) -> None:
    database, breaker, clock = guarded.database, guarded.breaker, guarded.clock
    for _ in range(4):
        raised = await raising(database, starting_up())
        assert isinstance(raised, DatabaseUnavailable)
        assert raised.headers["Retry-After"] == "2"
    assert breaker.state is BreakerState.OPEN
    assert breaker.stats().calls["failure"] == 4

    entered = False
    with pytest.raises(DatabaseUnavailable) as refused:
        async with database.read():
            entered = True
    assert not entered  # nothing was sent to a database known to be down
    assert refused.value.extensions["reason"] == BREAKER_OPEN
    assert refused.value.headers["Retry-After"] == "1"

    clock.advance(1.0)
    async with database.read():  # the probe: the database is back
        pass
    assert breaker.state is BreakerState.CLOSED


async def test_what_the_database_answered_counts_as_a_success_and_stays_what_it_is(
    guarded: Guarded,
) -> None:
    database, breaker = guarded.database, guarded.breaker
    for _ in range(6):
        raised = await raising(database, duplicate())
        assert isinstance(raised, exc.IntegrityError)  # not turned into a 503
    raised = await raising(database, NotFound("no such thing"))
    assert isinstance(raised, NotFound)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats().calls["failure"] == 0
    assert breaker.stats().calls["success"] == 7


async def test_a_cancelled_probe_gives_its_permit_back(
    guarded: Guarded,
) -> None:
    database, breaker, clock = guarded.database, guarded.breaker, guarded.clock
    for _ in range(4):
        await raising(database, starting_up())
    clock.advance(1.0)
    raised = await raising(database, asyncio.CancelledError())
    assert isinstance(raised, asyncio.CancelledError)
    assert breaker.state is BreakerState.HALF_OPEN
    async with database.read():  # the permit came back: this probe runs and closes it
        pass
    assert breaker.state is BreakerState.CLOSED


# --- the error boundary ------------------------------------------------------------------


def app_raising(error: BaseException, *, after_start: bool = False) -> ErrorBoundaryMiddleware:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        if after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    return ErrorBoundaryMiddleware(inner)


async def call(app: ErrorBoundaryMiddleware) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        return await client.get("/v1/recognitions")


async def test_a_database_outage_raised_by_a_middleware_answers_503_not_500() -> None:
    response = await call(app_raising(starting_up()))
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "2"
    assert response.json()["type"] == "https://keel.dev/problems/database-unavailable"
    assert response.json()["instance"] == "/v1/recognitions"


async def test_a_keel_error_raised_by_a_middleware_answers_as_itself() -> None:
    response = await call(app_raising(NotFound("gone")))
    assert response.status_code == 404
    assert response.json()["detail"] == "gone"


async def test_a_bug_answers_500_problem() -> None:
    response = await call(app_raising(duplicate()))  # a duplicate no route handled
    assert response.status_code == 500
    assert response.json()["type"] == "https://keel.dev/problems/internal"


async def test_an_error_after_the_response_started_is_not_answered_twice() -> None:
    with pytest.raises(exc.DBAPIError):
        await call(app_raising(starting_up(), after_start=True))


def failing_as_the_response_starts(app: ASGIApp) -> ASGIApp:
    """A middleware whose work at ``http.response.start`` meets the database down (as
    the limits' quota hooks or idempotency's settling do) before it forwards the start."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                raise DatabaseUnavailable("the database is not answering", retry_after=2)
            await send(message)

        await app(scope, receive, sending)

    return middleware


async def test_the_database_failing_while_the_response_starts_answers_503() -> None:
    routes = FastAPI()
    install_problems(routes)

    @routes.post("/v1/recognitions", status_code=201)
    async def create() -> dict[str, str]:
        return {"id": "chosen 201, never sent"}

    app = ErrorBoundaryMiddleware(failing_as_the_response_starts(routes))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        response = await client.post("/v1/recognitions")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["type"] == "https://keel.dev/problems/database-unavailable"
