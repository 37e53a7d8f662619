"""The error boundary: every exception below it is answered, never left to the server.

FastAPI's exception handlers live in two places: Keel's errors are handled next to
the routes (Starlette's ``ExceptionMiddleware``), and everything else goes to the
outermost ``ServerErrorMiddleware``, which answers 500 and then *re-raises*, so
uvicorn logs the exception again and closes the connection. Errors raised by the
middleware between the two — authentication, limits, idempotency, all of which
talk to the database — would otherwise meet only that last handler: a database
restart seen by the authentication lookup became a ``500`` and a closed
connection.

This pure ASGI middleware sits outside Keel's own middleware (inside the
observability layer, which then records the answer like any other). An exception
raised before the response started is answered here by
:func:`keel.http.problems.for_exception` — the Keel error as itself, the database
being unavailable as ``503 database-unavailable`` with ``Retry-After``, a bug as
``500`` — and the request ends normally, keeping the connection. Once a response
has started its status cannot change; that exception is re-raised, and the
server ends the connection, the only honest signal of a truncated body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.http.problems import for_exception


class ErrorBoundaryMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as error:
            if started:
                raise
            await for_exception(error, scope["path"])(scope, receive, send)
