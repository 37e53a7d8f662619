"""FastAPI dependencies shared by the routers.

They are ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request (about
a tenth of an authenticated GET's time on the development box).

Each dependency a route declares costs a nested dependency solve per request
(FastAPI re-walks the graph every time, cached results included), so none is
declared only for documentation: the principal's dependency is itself the
bearer security scheme OpenAPI lists.
"""

from __future__ import annotations

from typing import Annotated

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
from keel.http.state import peek

BEARER_SCHEME = "HTTPBearer"


class BearerPrincipal(SecurityBase):
    """The caller's principal, as the ``HTTPBearer`` scheme of the OpenAPI document.

    FastAPI documents a scheme only through a dependency that is a ``SecurityBase``.
    The authentication middleware has already checked the token and left the
    principal in the request state, so a separate ``HTTPBearer`` dependency would
    only parse the header again, once per request, to be thrown away; this one
    documents the scheme and reads the principal.
    """

    def __init__(self, *, description: str) -> None:
        self.model = HTTPBearerModel(description=description)
        self.scheme_name = BEARER_SCHEME

    async def __call__(self, request: Request) -> Principal:
        state = peek(request.scope)
        principal = state.principal if state is not None else None
        if principal is None:
            raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'")
        return principal


require_principal = BearerPrincipal(description="An API token from `keel admin create-token`")


async def get_services(request: Request) -> Services:
    return services_of(request)


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
# What each /v1 router's handlers may use: the app's services, seen through a narrow protocol.
ReadParts = Annotated[Reading, Depends(get_services)]
AuditParts = Annotated[Auditing, Depends(get_services)]
RecordingParts = Annotated[Recording, Depends(get_services)]
ExportParts = Annotated[Exporting, Depends(get_services)]
UploadParts = Annotated[Uploading, Depends(get_services)]
QuotaParts = Annotated[Quotas, Depends(get_services)]
