"""While the process drains, every response says ``Connection: close``."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.observe.lifecycle import Lifecycle


class CloseWhenDraining:
    """While draining, answer with ``Connection: close`` so clients stop reusing connections.

    At the end of the drain the server closes its idle kept-alive connections; a
    client that had just sent a request on one would see it closed unanswered. A
    client told ``Connection: close`` opens a new connection for its next request
    instead — through the listener, which is quiesced before it closes — so by then
    no kept-alive connection of a busy client is left idle to be cut.
    """

    def __init__(self, app: ASGIApp, *, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.lifecycle.draining:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)
