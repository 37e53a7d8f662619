"""Idempotency keys on creating requests, as pure ASGI middleware.

It sits after authentication (it keys on the principal) and the limits, and
before the route; a retry of a *finished* request never gets this far: the
replay step in front of the limits answers it (``replay.py``). For a keyed
``POST`` to an operation that takes keys it:

1. takes the route from the app's :class:`~keel.http.routing.RouteTable`
   (method + route *template*, never the raw path; the same table the limits
   use) and whether it takes keys from its facts and validates the key (400 problems);
2. fingerprints the request and **claims** the key in a short transaction of
   its own, committed before any work starts;
3. on a stored outcome with the same fingerprint, **replays** it with
   ``Idempotent-Replayed: true``; a different fingerprint is a 422; a live
   claim held by another request is a 409 whose ``Retry-After`` is the rest
   of that claim's lease (rounded up), when a retry next learns something;
4. otherwise runs the route, which stores its outcome in its own business
   transaction (see ``unit.py``), while a heartbeat extends the claim's lease
   (``heartbeat.py``) so a slow request is never taken for a dead one; and
   then, when the response starts, settles
   what the route did not: a refusal decided while running is stored, any
   other failure **releases** the key so the client may retry.

The order of claim and fingerprint check, and why
-------------------------------------------------
A JSON body is small and the route reads it whole anyway, so it is read
first, fingerprinted in canonical form, and the fingerprint is stored with
the claim: a concurrent request with a different body is told 422 at once.

An upload is streamed and may be 25 MB, so it is **claimed before its body is
read** and fingerprinted while it streams past (SHA-256 over its parts' raw
bytes, boundary left out — see ``fingerprints.py``):
holding it in memory, or storing its bytes before claiming, would cost every
upload for the sake of rare retries. A concurrent duplicate therefore gets
409 without its body being read at all; a request that finds a *stored*
outcome reads and hashes its body (storing nothing) to choose between replay
and 422. The fingerprint of the first request is written with its outcome,
in the business transaction, once the route has read the body to its end.
Should two uploads race past an expired lease, both may store the same bytes:
content addressing makes that harmless, and only the claim owner's row counts.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.clock import Clock
from keel.errors import KeelError
from keel.guard.idempotency.errors import IdempotencyConflict, IdempotencyKeyRequired
from keel.guard.idempotency.fingerprints import fingerprint, is_json, streaming_hasher
from keel.guard.idempotency.heartbeat import heartbeat
from keel.guard.idempotency.keys import KeyRef, key_from_headers
from keel.guard.idempotency.metrics import IdempotencyMetrics, count
from keel.guard.idempotency.store import Claim, ClaimResult, IdempotencyStore, StoredResponse
from keel.guard.idempotency.unit import IdempotencyScope, replayable
from keel.http.problems import from_error
from keel.http.replay import (
    OnMismatch,
    header,
    key_ref,
    keyed_route,
    read_body,
    read_fingerprint,
    refuse_another_request,
    replay_or_refuse,
)
from keel.http.replayed_body import receive_replaying
from keel.http.routing import RouteTable
from keel.http.state import state_of

log = structlog.get_logger(__name__)

__all__ = ["IdempotencyMiddleware"]

MAX_REFUSAL_BODY = 64 * 1024  # refusal bodies are problem documents; bigger ones are not stored


async def _respond(scope: Scope, receive: Receive, send: Send, error: KeelError) -> None:
    await from_error(error, scope["path"])(scope, receive, send)


class IdempotencyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore,
        routes: RouteTable,
        required: Collection[str],
        clock: Clock,
        max_body_bytes: int,
        lease_seconds: float,
        metrics: IdempotencyMetrics,
        on_mismatch: OnMismatch | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.on_mismatch = on_mismatch
        self.store = store
        self.routes = routes
        self.required = frozenset(required)
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.lease_seconds = lease_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = keyed_route(scope, self.routes)
        if route is None:
            # Not an operation that takes keys, or anonymous: the route answers (401).
            await self.app(scope, receive, send)
            return
        operation = route.name
        try:
            key = key_from_headers(scope["headers"])
            if key is None and operation in self.required:
                raise IdempotencyKeyRequired(
                    f"{operation} requires an Idempotency-Key header: send a unique value "
                    "(a UUID) and repeat it on every retry of the same request"
                )
        except KeelError as error:
            await _respond(scope, receive, send, error)
            return
        if key is None:
            await self.app(scope, receive, send)
            return
        await self._keyed(scope, receive, send, key_ref(scope, operation, key))

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, ref: KeyRef) -> None:
        content_type = header(scope, b"content-type")
        keyed = IdempotencyScope(
            store=self.store, ref=ref, owner=secrets.token_hex(16), clock=self.clock
        )
        app_receive = receive
        if is_json(content_type):
            try:
                body = await read_body(receive, self.max_body_bytes)
            except KeelError as error:
                await _respond(scope, receive, send, error)
                return
            if body is None:
                return
            keyed.fingerprint = fingerprint(ref.operation, body, content_type)
            app_receive = receive_replaying(body, receive)
        else:
            keyed.hasher = streaming_hasher(ref.operation, content_type)
            app_receive = self._hashing(receive, keyed)
        try:
            claim = await self.store.claim(
                ref,
                owner=keyed.owner,
                fingerprint=keyed.fingerprint,
                now=self.clock.now(),
                seen_absent=state_of(scope).key_seen_absent,
            )
            if not claim.owned:
                await self._answer_from(claim, scope, receive, send, keyed)
                return
        except KeelError as error:
            await _respond(scope, receive, send, error)
            return
        if claim.result is ClaimResult.TAKEN_OVER:
            count(self.metrics.takeovers, ref.operation)
        state_of(scope).idempotency = keyed
        settling = _Settling(self, keyed, send)
        try:
            async with heartbeat(keyed, lease_seconds=self.lease_seconds):
                await self.app(scope, app_receive, settling.send)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await settling.give_up()
            raise
        if not settling.settled:  # settled as the response started, the usual case: no scope
            with anyio.CancelScope(shield=True):
                await settling.give_up()

    def _hashing(self, receive: Receive, keyed: IdempotencyScope) -> Receive:
        async def hashing() -> Message:
            message = await receive()
            if message["type"] == "http.request" and keyed.hasher is not None:
                keyed.hasher.update(message.get("body", b""))
                if not message.get("more_body", False):
                    keyed.body_finished()
            return message

        return hashing

    async def _answer_from(
        self, claim: Claim, scope: Scope, receive: Receive, send: Send, keyed: IdempotencyScope
    ) -> None:
        route = keyed.ref.operation
        if claim.result is ClaimResult.COMPLETED:
            # Finished between the replay step's lookup and this claim: replay it here.
            if keyed.fingerprint is None:
                keyed.fingerprint = await read_fingerprint(
                    scope, receive, route, self.max_body_bytes
                )
            await replay_or_refuse(
                claim, scope, send, route, keyed.fingerprint, self.on_mismatch, self.metrics
            )
            return
        await refuse_another_request(
            claim, scope, route, keyed.fingerprint, self.on_mismatch, self.metrics
        )
        count(self.metrics.conflicts, route)
        retry_after = claim.retry_after(self.clock.now())
        raise IdempotencyConflict(
            "a request with this Idempotency-Key is still being processed; "
            f"retry in {retry_after} s (Retry-After) to get its outcome",
            retry_after=retry_after,
        )


class _Settling:
    """Wraps ``send``: when the route's response starts, settle the claim it leaves behind.

    - the route stored its outcome (and answered below 500): nothing to do;
    - a refusal (4xx) decided while the route ran: its body is held back, stored
      with the claim, then sent — so a retry after this answer finds it (a
      success the route failed to record is stored the same way, and logged);
    - anything else (refused before any work, a 5xx, a lost lease, no answer):
      release the key *before* answering, so an immediate retry runs.
    """

    def __init__(self, guard: IdempotencyMiddleware, keyed: IdempotencyScope, send: Send) -> None:
        self.guard = guard
        self.keyed = keyed
        self._send = send
        # Whether the claim needs nothing more (stored, released, or the refusal held
        # and stored); a shielded ``give_up`` costs every request about 4 µs otherwise.
        self.settled = False
        self._held: Message | None = None
        self._body: list[bytes] = []
        self._size = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.settled:
            status = int(message["status"])
            if self._stored_afterwards(status):
                self._held = message
                return
            if not (self.keyed.completed and status < 500):
                await self._release()
            self.settled = True
        elif self._held is not None and message["type"] == "http.response.body":
            self._body.append(message.get("body", b""))
            self._size += len(self._body[-1])
            if self._size > MAX_REFUSAL_BODY:
                await self._release()
                await self._flush(more_body=message.get("more_body", False))
                return
            if not message.get("more_body", False):
                await self._settle_refusal()
                await self._flush(more_body=False)
            return
        await self._send(message)

    def _stored_afterwards(self, status: int) -> bool:
        keyed = self.keyed
        if keyed.completed or keyed.lease_lost or keyed.fingerprint is None or status >= 500:
            return False
        if status < 400:
            # A success the route did not record in its transaction (a route that
            # does not use the unit of work): storing it late beats a duplicate.
            log.error("idempotency_outcome_unrecorded", operation=keyed.ref.operation)
            return True
        return keyed.ran

    async def _settle_refusal(self) -> None:
        keyed = self.keyed
        if self._held is None:
            return
        response = StoredResponse(
            status=int(self._held["status"]),
            headers=_replayable_raw(self._held.get("headers", [])),
            body=b"".join(self._body),
        )
        try:
            await keyed.store.settle(
                keyed.ref,
                owner=keyed.owner,
                fingerprint=keyed.fingerprint,
                response=response,
                now=keyed.clock.now(),
            )
        except KeelError:
            log.warning("idempotency_settle_failed", operation=keyed.ref.operation)
        self.settled = True

    async def _flush(self, *, more_body: bool) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        body, self._body = b"".join(self._body), []
        await self._send(held)
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})
        self.settled = True

    async def _release(self) -> None:
        self.settled = True
        keyed = self.keyed
        try:
            if await keyed.store.release(keyed.ref, owner=keyed.owner):
                count(self.guard.metrics.releases, keyed.ref.operation)
        except KeelError:
            # The claim stays until its lease expires; then a retry runs.
            log.warning("idempotency_release_failed", operation=keyed.ref.operation)

    async def give_up(self) -> None:
        """The route finished or failed: release a claim nobody settled."""
        if not self.settled:
            await self._release()


def _replayable_raw(headers: Any) -> tuple[tuple[str, str], ...]:
    return replayable(
        [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in headers]
    )
