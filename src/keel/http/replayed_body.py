"""A request body read ahead of the app, handed to it again.

Middleware that must see a body before the route does — the JSON bounds, the
idempotency fingerprint — reads it from ASGI's ``receive`` and then gives the
app a ``receive`` that answers the same bytes once, as one message, and
defers to the real one afterwards (so a disconnect still reaches the app).
"""

from __future__ import annotations

from starlette.types import Message, Receive


def receive_replaying(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
