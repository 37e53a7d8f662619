"""FastAPI dependencies shared by the routers.

They are ``async def`` although none awaits: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per dependency per request (about
a tenth of an authenticated GET's time on the development box).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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

# Documents the scheme in OpenAPI; the middleware has already checked the token.
_bearer = HTTPBearer(auto_error=False, description="An API token from `keel admin create-token`")


async def require_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Principal:
    state = peek(request.scope)
    principal = state.principal if state is not None else None
    if principal is None:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'")
    return principal


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
