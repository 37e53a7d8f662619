"""The limits step of the request path: rate limits, quotas and in-flight slots.

It runs after authentication (it keys on the principal) and before
idempotency and the routes. For each ``/v1`` request it

1. takes the route (template and operation, from the route table) and builds
   the limiter context with :meth:`keel.guard.limits.LimitGuard.context`;
2. asks the limiter for one all-or-nothing decision (rate limits spend a
   cell, quotas *reserve* a unit, an in-flight slot is taken for the user and
   for the organisation); a refusal answers 429 with ``Retry-After`` and is
   recorded as a breach, a full slot answers 429 naming the concurrency limit;
3. settles the quota reservation exactly once, since quotas count successes:
   a response starting with a 2xx that is not an idempotent replay keeps it
   (and adds ``Keel-Quota-Warning`` when 80/90/100 % is crossed); any other
   status, an exception, or a request that ends with no response (a client
   gone) releases it — before the response is sent, so a client that reads
   ``/v1/quotas`` after an error sees the unit back;
4. gives the slots back when the response is done;
5. adds the RateLimit and X-RateLimit header fields to every limited response,
   read after this request's reservation (the 10th of 10 says 0 remaining).

The decisions themselves are :mod:`keel.guard.limits`'s; this module is the ASGI adapter.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.guard.limits import (
    HeldSlot,
    LimitGuard,
    concurrency_exceeded,
    exceeded,
    release,
    slot_claims,
)
from keel.guard.ratelimit import ratelimit_headers
from keel.http.problems import from_error
from keel.http.routing import RouteTable
from keel.http.state import client_ip, state_of


def add_headers(message: Message, added: Mapping[str, str]) -> None:
    """Set ``added`` on a response start, as ``MutableHeaders`` item by item would.

    That rescans the whole list once per field, and a limited response gets five;
    they are normally new to it, so they are appended in one go, and only a
    response that already carries one of them is edited field by field.
    """
    raw = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in added.items()
    ]
    existing = message.get("headers", [])
    if {name for name, _ in raw}.isdisjoint(name for name, _ in existing):
        message["headers"] = [*existing, *raw]
        return
    fields = MutableHeaders(scope=message)
    for name, value in added.items():
        fields[name] = value


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, *, guard: LimitGuard, routes: RouteTable) -> None:
        self.app = app
        self.guard = guard
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        guard = self.guard
        state = state_of(scope)
        principal = state.principal
        matched = state.matched(self.routes, scope)
        route: str | None = None
        operation: str | None = None
        if matched is not None:
            route, operation = matched.name, matched.facts.operation
            state.template = matched.template
        context = guard.context(principal, route, operation, client_ip(scope))
        now = guard.clock.now()
        claims, scopes = slot_claims(guard.concurrency, context)
        decision = await guard.limiter.decide(
            guard.policy.limits, context, now.timestamp(), slots=claims
        )
        if not decision.allowed:
            if decision.breached is not None:
                guard.record_breach(context, decision, now)
                refusal = exceeded(decision)
            else:
                refusal = concurrency_exceeded(decision, claims, scopes, guard.metrics)
            await from_error(refusal, scope["path"])(scope, receive, send)
            return
        headers = ratelimit_headers(decision)
        slots = [
            HeldSlot(claim.key, slot.slot_id)
            for claim, slot in zip(claims, decision.slots, strict=True)
            if slot.slot_id is not None
        ]
        reservation = decision.reservation

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: dict[str, str] = {}
                if reservation is not None and not reservation.settled:
                    status = int(message["status"])
                    if 200 <= status < 300 and not state.replayed:
                        extra = await guard.keep(context, reservation)
                    else:
                        await release(reservation)
                        # The unit is back: report the quota as it now stands.
                        extra = ratelimit_headers(decision.unreserved())
                add_headers(message, headers | extra)
            await send(message)

        started = guard.clock.monotonic()
        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            if reservation is not None and not reservation.settled:
                # No response started: the route raised, or the client went away.
                await release(reservation)
            await guard.release_slots(slots)
            if principal is not None:
                finished = guard.clock.monotonic()
                guard.noisy.record(principal.org_id, finished - started, finished)
