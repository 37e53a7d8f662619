"""Probes and ``/metrics``, answered before the steps they skip.

A ``GET`` of ``/live``, ``/ready``, ``/health`` or ``/metrics`` without a query
string is answered here, inside the observability steps (so it keeps its
request id, ``traceparent``, duration metric and debug access line), the drain's
``Connection: close`` and the error boundary, but past shedding, authentication,
the body limits, replay, the limits, idempotency and the router. None of those
act on these paths (probes are never shed nor limited and need no token), yet
each cost an orchestrator's poll and a scrape its share of every layer, and the
router matched the path against every ``/v1`` route before reaching them.

Anything else (another method, a query such as ``?verbose`` or ``?exclude=``)
goes down the whole pipeline to the routes, which answer with the same
functions: validation and its problem+json stay in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.http.state import state_of

Answer = Callable[[], Awaitable[Response]]


class OperationalShortcut:
    """``answers`` maps a path to its answer to a plain ``GET``."""

    def __init__(self, app: ASGIApp, *, answers: Mapping[str, Answer]) -> None:
        self.app = app
        self.answers = dict(answers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = (
            self.answers.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]
            else None
        )
        if answer is None:
            await self.app(scope, receive, send)
            return
        state_of(scope).template = scope["path"]  # the label the router would have given
        response = await answer()
        await response(scope, receive, send)
