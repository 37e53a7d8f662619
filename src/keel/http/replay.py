"""Replays before limits: a retry of a finished request spends no rate or quota.

A client retries with its ``Idempotency-Key`` because it never saw the answer
— the one case idempotency exists for. If the request had succeeded, the
retry must get that answer back even when the user's daily quota has since
been used up (by that very request, perhaps), and it must not spend a rate
limit cell or a quota unit of its own: it does no work. So this step sits
between authentication and the limits (``… → auth → replay → limits →
idempotency → routes``) and, for a keyed ``POST`` to an operation that takes
keys, **looks the key up** — one read, no claim, no write:

- a stored outcome: the request's body is read and fingerprinted and the
  outcome is **replayed** (``Idempotent-Replayed: true``), or, for a different
  request under the same key, refused with the same 422 as always — both
  answered here, before any limit;
- anything else (no row, a live claim, an expired one, a malformed key): the
  request goes on untouched — body unread — through the limits to the
  idempotency middleware, which claims, answers 409s and runs the work
  exactly as before.

A key is scoped to its user and operation (``keys.py``), so the lookup can
only ever find the caller's own outcome. The lookup costs every keyed request
one indexed read before the limits; a request whose key is not finished is
then claimed as before (a replay that races its original's completion is
still replayed by the middleware, after the limits, which then skip the
quota). Replays are not rate-limited: each costs one read and, at most, one
bounded body read — less than the 409 or 429 that would otherwise answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.clock import Clock
from keel.domain.principal import Principal
from keel.errors import KeelError, PayloadTooLarge
from keel.guard.idempotency.errors import IdempotencyConflict, IdempotencyKeyReused
from keel.guard.idempotency.fingerprints import fingerprint, is_json, streaming_hasher
from keel.guard.idempotency.keys import KeyRef, key_from_headers
from keel.guard.idempotency.metrics import IdempotencyMetrics, count
from keel.guard.idempotency.store import Claim, ClaimResult, IdempotencyStore, StoredResponse
from keel.http.problems import from_error
from keel.http.routing import Route, RouteTable
from keel.http.state import client_ip, state_of

UNSAFE_METHODS = frozenset({"POST", "PATCH"})

# Told when a key is reused for another request: (principal, client IP, method, operation).
OnMismatch = Callable[[Principal, str | None, str, str], Awaitable[None]]


def keyed_route(scope: Scope, routes: RouteTable) -> Route | None:
    """The route of an authenticated unsafe request that takes keys, else ``None``."""
    if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
        return None
    state = state_of(scope)
    route = state.matched(routes, scope)
    if route is None or not route.facts.takes_keys or state.principal is None:
        return None
    return route


def key_ref(scope: Scope, operation: str, key: str) -> KeyRef:
    principal = state_of(scope).principal
    assert principal is not None  # keyed_route admits authenticated requests only
    return KeyRef(principal.user_id, principal.org_id, operation, key)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` if the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the {limit}-byte limit", limit=limit)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_fingerprint(scope: Scope, receive: Receive, operation: str, limit: int) -> str:
    """Read the request's body to its end and fingerprint it, storing nothing."""
    content_type = header(scope, b"content-type")
    if is_json(content_type):
        body = await read_body(receive, limit)
        if body is None:
            raise IdempotencyConflict("the client went away before its body was read")
        return fingerprint(operation, body, content_type)
    hasher = streaming_hasher(operation, content_type)
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise IdempotencyConflict("the client went away before its body was read")
        hasher.update(message.get("body", b""))
        if hasher.size > limit:
            raise PayloadTooLarge(f"the body is larger than the {limit}-byte limit", limit=limit)
        if not message.get("more_body", False):
            return hasher.finish()


async def refuse_another_request(
    claim: Claim,
    scope: Scope,
    operation: str,
    request_fingerprint: str | None,
    on_mismatch: OnMismatch | None,
    metrics: IdempotencyMetrics,
) -> None:
    """Raise the 422 if the key is held for a request with another fingerprint (when both
    fingerprints are known: an upload's is only known once its body was read)."""
    if (
        request_fingerprint is None
        or claim.fingerprint is None
        or request_fingerprint == claim.fingerprint
    ):
        return
    count(metrics.mismatches, operation)
    principal = state_of(scope).principal
    if on_mismatch is not None and principal is not None:
        await on_mismatch(principal, client_ip(scope), scope["method"], operation)
    raise IdempotencyKeyReused(
        "this Idempotency-Key was already used with a different request; "
        "use a new key for a new request",
    )


async def replay_or_refuse(
    claim: Claim,
    scope: Scope,
    send: Send,
    operation: str,
    request_fingerprint: str | None,
    on_mismatch: OnMismatch | None,
    metrics: IdempotencyMetrics,
) -> None:
    """Answer a request that found a stored outcome: replay it, or 422 for another request."""
    await refuse_another_request(claim, scope, operation, request_fingerprint, on_mismatch, metrics)
    assert claim.response is not None  # a COMPLETED claim carries its response
    count(metrics.replays, operation)
    state_of(scope).replayed = True
    await send_stored(claim.response, send)


async def send_stored(response: StoredResponse, send: Send) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    headers += [
        (b"content-length", str(len(response.body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


class ReplayMiddleware:
    """Answer retries of finished keyed requests before the limits see them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore,
        routes: RouteTable,
        clock: Clock,
        max_body_bytes: int,
        metrics: IdempotencyMetrics,
        on_mismatch: OnMismatch | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.metrics = metrics
        self.routes = routes
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.on_mismatch = on_mismatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = keyed_route(scope, self.routes)
        key = None
        if route is not None:
            # A malformed key is the idempotency middleware's to refuse, after the limits.
            with contextlib.suppress(KeelError):
                key = key_from_headers(scope["headers"])
        if route is None or key is None:
            await self.app(scope, receive, send)
            return
        operation = route.name
        state = state_of(scope)
        # Answered here, before routing: the access log and metrics still get the template.
        state.template = route.template
        try:
            held = await self.store.lookup(key_ref(scope, operation, key), now=self.clock.now())
        except KeelError as error:  # the database is unreachable: so would the claim be
            await from_error(error, scope["path"])(scope, receive, send)
            return
        if held is None or held.result is not ClaimResult.COMPLETED:
            if held is not None and held.result is ClaimResult.ABSENT:
                state.key_seen_absent = True
            await self.app(scope, receive, send)
            return
        try:
            request = await read_fingerprint(scope, receive, operation, self.max_body_bytes)
            await replay_or_refuse(
                held, scope, send, operation, request, self.on_mismatch, self.metrics
            )
        except KeelError as error:
            await from_error(error, scope["path"])(scope, receive, send)
