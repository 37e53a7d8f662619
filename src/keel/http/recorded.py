"""The unit-of-work hook: a route stores its outcome in its own transaction.

The idempotency step claims the key and keeps an
:class:`~keel.guard.idempotency.IdempotencyScope` in the request's
:class:`~keel.http.state.RequestState`. A creating route wraps its write like this::

    async with database.write() as session, recorded(request, session) as outcome:
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

A route whose transaction ends with the audit append writes the outcome
earlier, with ``await outcome.store()`` right after ``respond()``: the audit
chain head's row lock, which every writer of the organisation queues on, is
then taken by the transaction's last statement and held only until the
commit, not across the completion too. Should anything after ``store()``
fail, the transaction rolls the completion back and the request counts as
not completed (its claim is released, as for any failure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from keel.guard.idempotency.errors import IdempotencyLeaseLost
from keel.guard.idempotency.store import StoredResponse
from keel.guard.idempotency.unit import IdempotencyScope, replayable
from keel.http.state import peek


def current(scope: Scope) -> IdempotencyScope | None:
    state = peek(scope)
    return state.idempotency if state is not None else None


class Outcome:
    """What the route will send; built here so the stored copy is the sent one."""

    def __init__(self, store: Callable[[Response], Awaitable[None]] | None = None) -> None:
        self.response: Response | None = None
        self.stored = False
        self._store = store

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

    async def store(self) -> None:
        """Write the outcome now, in the transaction, instead of when the block ends."""
        if self.response is None:
            raise RuntimeError("outcome.store() before outcome.respond()")
        if not self.stored and self._store is not None:
            await self._store(self.response)
        self.stored = True


def stored_response(response: Response) -> StoredResponse:
    return StoredResponse(
        status=response.status_code,
        headers=replayable(list(response.headers.items())),
        body=bytes(response.body),
    )


async def _complete(keyed: IdempotencyScope, session: AsyncSession, response: Response) -> None:
    fingerprint = keyed.fingerprint  # None while the body is still being read
    if fingerprint is None:
        raise RuntimeError("a keyed route completed before reading its request body to the end")
    try:
        await keyed.store.complete(
            session,
            keyed.ref,
            owner=keyed.owner,
            fingerprint=fingerprint,
            response=stored_response(response),
            now=keyed.clock.now(),
        )
    except IdempotencyLeaseLost:
        keyed.lease_lost = True
        raise
    keyed.completed = True


@asynccontextmanager
async def recorded(connection: HTTPConnection, session: AsyncSession) -> AsyncIterator[Outcome]:
    """Store the route's outcome in ``session``'s transaction (a no-op without a key)."""
    keyed = current(connection.scope)
    if keyed is None:
        yield Outcome()
        return

    async def complete(response: Response) -> None:
        await _complete(keyed, session, response)

    outcome = Outcome(complete)
    keyed.ran = True
    try:
        yield outcome
    except BaseException:
        # The transaction rolls back, taking a completion written in it along.
        keyed.completed = False
        raise
    if outcome.response is None:
        raise RuntimeError("a keyed route left its unit of work without outcome.respond()")
    await outcome.store()
