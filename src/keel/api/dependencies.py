"""FastAPI dependencies shared by the routers.

They are ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request (about
a tenth of an authenticated GET's time on the development box).

Each dependency a route declares costs a nested dependency solve per request
(FastAPI re-walks the graph every time, cached results included), so none is
declared only for documentation: the principal's dependency is itself the
bearer security scheme OpenAPI lists, and a writing route may take the
principal, the services and the client address as one (:class:`Writer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from keel.api.services import (
    Auditing,
    Exporting,
    Quotas,
    Reading,
    Recording,
    Services,
    Uploading,
    services_of,
)
from keel.domain.principal import Principal
from keel.errors import Unauthenticated
from keel.http.state import client_ip, peek

Parts_co = TypeVar("Parts_co", covariant=True)

BEARER_SCHEME = "HTTPBearer"
_SCHEME_HELP = "An API token from `keel admin create-token`"


class _Bearer(SecurityBase):
    """A dependency that is the ``HTTPBearer`` scheme of the OpenAPI document.

    FastAPI documents a scheme only through a dependency that is a ``SecurityBase``.
    The authentication middleware has already checked the token and left the
    principal in the request state, so a separate ``HTTPBearer`` dependency would
    only parse the header again, once per request, to be thrown away; these
    document the scheme and read the principal.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description=_SCHEME_HELP)
        self.scheme_name = BEARER_SCHEME

    @staticmethod
    def principal_of(request: Request) -> Principal:
        state = peek(request.scope)
        principal = state.principal if state is not None else None
        if principal is None:
            raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'")
        return principal


class BearerPrincipal(_Bearer):
    """The caller's principal."""

    async def __call__(self, request: Request) -> Principal:
        return self.principal_of(request)


@dataclass(frozen=True, slots=True)
class Writer(Generic[Parts_co]):
    """What a route that writes and audits needs: who calls, the services, from where.

    One dependency instead of three (the principal, the services, the client
    address): FastAPI solves each declared dependency anew on every request,
    about 10 µs apiece, and the keyed writes are the requests that count.
    """

    principal: Principal
    services: Parts_co
    ip: str | None


class BearerWriter(_Bearer):
    """The caller as a :class:`Writer`."""

    async def __call__(self, request: Request) -> Writer[Services]:
        return Writer(self.principal_of(request), services_of(request), client_ip(request.scope))


require_principal = BearerPrincipal()
require_writer = BearerWriter()


async def get_services(request: Request) -> Services:
    return services_of(request)


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
# The writing routes' one dependency, each seeing the services through its narrow protocol.
ExportWriter = Annotated[Writer[Exporting], Depends(require_writer)]
RecordingWriter = Annotated[Writer[Recording], Depends(require_writer)]
# What each /v1 router's handlers may use: the app's services, seen through a narrow protocol.
ReadParts = Annotated[Reading, Depends(get_services)]
AuditParts = Annotated[Auditing, Depends(get_services)]
RecordingParts = Annotated[Recording, Depends(get_services)]
ExportParts = Annotated[Exporting, Depends(get_services)]
UploadParts = Annotated[Uploading, Depends(get_services)]
QuotaParts = Annotated[Quotas, Depends(get_services)]
