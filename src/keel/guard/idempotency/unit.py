"""The unit-of-work hook: a route stores its outcome in its own transaction.

The middleware claims the key and puts an :class:`IdempotencyScope` in the
request's ``scope["state"]``. A creating route wraps its write like this::

    async with services.database.write() as session, recorded(request, session) as outcome:
        row = await domain.create(session, ...)
        response = outcome.respond(Out.model_validate(row), status_code=201)
    return response

``outcome.respond()`` builds the exact response the route returns, so a
replay is byte for byte what the first request sent. When the block ends
without an error, the outcome is written by a conditional ``UPDATE`` *before*
the business transaction commits: both commit, or neither does. If the claim
was lost (its lease expired and another request took the key over) the update
raises :class:`~keel.guard.idempotency.errors.IdempotencyLeaseLost` and the
business write rolls back — this request's work never counts twice. Without
an ``Idempotency-Key`` there is no scope and the hook only builds the response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from keel.clock import Clock
from keel.guard.idempotency.errors import IdempotencyLeaseLost
from keel.guard.idempotency.fingerprints import BodyHasher, MultipartHasher
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.store import IdempotencyStore, StoredResponse

STATE_KEY = "idempotency"

# Headers a replay repeats; everything else (dates, request ids, rate-limit
# headers, cookies) belongs to the request that is being answered now.
REPLAYED_HEADERS = frozenset(
    {"content-type", "content-language", "location", "link", "etag", "last-modified"}
)


def replayable(headers: Mapping[str, str] | list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((name.lower(), value) for name, value in items if name.lower() in REPLAYED_HEADERS)


@dataclass
class IdempotencyScope:
    """One keyed request's claim, as the route and the middleware see it."""

    store: IdempotencyStore
    ref: KeyRef
    owner: str
    clock: Clock
    fingerprint: str | None = None  # known at claim time for JSON bodies
    hasher: BodyHasher | MultipartHasher | None = field(default=None, repr=False)  # streamed bodies
    ran: bool = False  # the route entered its unit of work
    completed: bool = False  # the outcome was written in the business transaction
    lease_lost: bool = False

    def body_finished(self) -> None:
        if self.hasher is not None and self.fingerprint is None:
            self.fingerprint = self.hasher.finish()


def current(scope: Scope) -> IdempotencyScope | None:
    found = scope.get("state", {}).get(STATE_KEY)
    return found if isinstance(found, IdempotencyScope) else None


class Outcome:
    """What the route will send; built here so the stored copy is the sent one."""

    def __init__(self) -> None:
        self.response: Response | None = None

    def respond(
        self,
        content: BaseModel,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        self.response = JSONResponse(
            content.model_dump(mode="json"), status_code=status_code, headers=dict(headers or {})
        )
        return self.response


def stored_response(response: Response) -> StoredResponse:
    return StoredResponse(
        status=response.status_code,
        headers=replayable(list(response.headers.items())),
        body=bytes(response.body),
    )


@asynccontextmanager
async def recorded(connection: HTTPConnection, session: AsyncSession) -> AsyncIterator[Outcome]:
    """Store the route's outcome in ``session``'s transaction (a no-op without a key)."""
    outcome = Outcome()
    keyed = current(connection.scope)
    if keyed is None:
        yield outcome
        return
    keyed.ran = True
    yield outcome
    if outcome.response is None:
        raise RuntimeError("a keyed route left its unit of work without outcome.respond()")
    fingerprint = keyed.fingerprint  # None while the body is still being read
    if fingerprint is None:
        raise RuntimeError("a keyed route completed before reading its request body to the end")
    try:
        await keyed.store.complete(
            session,
            keyed.ref,
            owner=keyed.owner,
            fingerprint=fingerprint,
            response=stored_response(outcome.response),
            now=keyed.clock.now(),
        )
    except IdempotencyLeaseLost:
        keyed.lease_lost = True
        raise
    keyed.completed = True
