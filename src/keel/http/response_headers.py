"""A response whose headers the server cannot send is replaced before it starts.

The HTTP server checks every header as it writes the status line; one bad
value (a control character from a stored filename, say) used to fail there,
after the application had chosen its answer: the connection dropped with no
response, and the error took the event loop with it. Header values
Keel builds from client data are made safe where they are built
(:mod:`keel.api.disposition`); this pure ASGI middleware is the net under
that rule: it applies the server's own checks at ``http.response.start`` and,
if one fails, answers a ``500`` problem instead — a response the client
receives — and logs which header it was (never its value).
"""

from __future__ import annotations

import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.http.problems import problem_response

log = structlog.get_logger(__name__)

# What uvicorn refuses (httptools and h11 alike): a name must be a token, and
# a value holds no control character but tab.
_BAD_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\[\]={}\\"]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def unsendable_header(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The name of the first header the server would refuse to send, if any."""
    for name, value in headers:
        if not name or _BAD_NAME.search(name) or _BAD_VALUE.search(value):
            return name.decode("latin-1")
    return None


class ResponseHeaderCheck:
    """Pure ASGI middleware: never start a response the server cannot send."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def checked_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the broken response's body: the replacement has been sent
            if message["type"] == "http.response.start":
                bad = unsendable_header(list(message.get("headers", ())))
                if bad is not None:
                    replaced = True
                    log.error("response_header_unsendable", header=bad, path=scope["path"])
                    response = problem_response(
                        status=500,
                        slug="internal",
                        title="Internal error",
                        detail="the response could not be sent; it has been logged",
                        instance=scope["path"],
                    )
                    await response(scope, receive, send)
                    return
            await send(message)

        await self.app(scope, receive, checked_send)
