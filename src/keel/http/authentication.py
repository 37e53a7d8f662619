"""Bearer tokens → principal, as pure ASGI middleware.

It runs before rate limits and idempotency, which both key on the principal.
A request without ``Authorization`` passes through anonymous (the route then
answers 401, and anonymous limits can still count it); a request with a bad
token is refused here with a 401 problem, before any other work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from keel.domain.tokens import Authenticator
from keel.errors import KeelError, Unauthenticated
from keel.http.problems import from_error
from keel.http.state import client_ip, state_of

PROTECTED_PREFIX = "/v1/"


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer …`` header; raises if the header is malformed."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("use 'Authorization: Bearer <token>'")
            return str(token.strip())
    return None


FailureHook = Callable[[str | None], Awaitable[KeelError | None]]


class AuthenticationMiddleware:
    """``on_failure`` counts a failed attempt for the client IP and may turn the 401 into a 429."""

    def __init__(
        self, app: ASGIApp, *, authenticator: Authenticator, on_failure: FailureHook | None = None
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope)
        token: str | None = None
        try:
            token = bearer_token(scope)
            principal = await self.authenticator.authenticate(token, ip=ip) if token else None
        except Unauthenticated as error:
            self.authenticator.failed("invalid_token" if token else "malformed_header", ip)
            refusal: KeelError = error
            if self.on_failure is not None:
                refusal = await self.on_failure(ip) or error
            await from_error(refusal, scope["path"])(scope, receive, send)
            return
        except KeelError as error:
            response = from_error(error, scope["path"])
            await response(scope, receive, send)
            return
        state_of(scope).principal = principal
        await self.app(scope, receive, send)
