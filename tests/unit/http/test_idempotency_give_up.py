"""The idempotency step gives a claim up when the route leaves it unsettled, and only then.

Over the in-memory store, with a stand-in route: a route that ends without
answering leaves a claim nobody settled, which is released so a retry runs; a
route that answers has its claim settled as the response starts.
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from keel.domain.principal import Plan, Principal, Role
from keel.guard.idempotency import KeyRef
from keel.guard.idempotency.memory import MemoryIdempotencyStore
from keel.guard.idempotency.metrics import IdempotencyMetrics
from keel.guard.idempotency.store import ClaimResult
from keel.http.idempotency import IdempotencyMiddleware
from keel.http.routes import route_table
from keel.http.state import state_of
from keel.testing import ManualClock

ALICE = Principal("user-1", "org-1", Role.MEMBER, "token-1", Plan.TEAM)
REF = KeyRef("user-1", "org-1", "POST /v1/recognitions", "key-1")
BODY = json.dumps({"recipient_id": "user-2", "message": "thanks"}).encode()


def guarded(route: object, store: MemoryIdempotencyStore) -> IdempotencyMiddleware:
    return IdempotencyMiddleware(
        route,  # type: ignore[arg-type]
        store=store,
        routes=route_table(),
        required=(),
        clock=ManualClock(),
        max_body_bytes=1 << 20,
        lease_seconds=3,
        metrics=IdempotencyMetrics(None),
    )


async def post(app: IdempotencyMiddleware) -> list[int]:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/recognitions",
        "headers": [(b"content-type", b"application/json"), (b"idempotency-key", b"key-1")],
    }
    state_of(scope).principal = ALICE
    sent: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            sent.append(int(message["status"]))  # type: ignore[call-overload]

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_route_that_ends_without_answering_has_its_claim_released() -> None:
    store = MemoryIdempotencyStore(lease_seconds=3, retention_seconds=60)

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    assert await post(guarded(silent, store)) == []
    assert (await store.lookup(REF, now=ManualClock().now())).result is ClaimResult.ABSENT  # type: ignore[union-attr]


async def test_a_route_that_answers_settles_its_claim_as_the_response_starts() -> None:
    store = MemoryIdempotencyStore(lease_seconds=3, retention_seconds=60)
    released: list[KeyRef] = []
    release = store.release

    async def counting_release(ref: KeyRef, *, owner: str) -> bool:
        released.append(ref)
        return await release(ref, owner=owner)

    store.release = counting_release  # type: ignore[method-assign]

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    assert await post(guarded(failing, store)) == [503]
    assert released == [REF]  # once, as the 503 started; nothing left to give up after
