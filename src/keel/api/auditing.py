"""What the routers need to audit a request: the caller's address and the event's context.

The event carries raw ids here; the :class:`~keel.audit.Auditor` pseudonymises
them before anything is stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keel.audit import AuditEvent, EventCode
from keel.audit.chain import FieldValue
from keel.domain.principal import Principal


async def client_ip(request: Request) -> str | None:
    """``async``: FastAPI would run a plain ``def`` dependency in a worker thread."""
    return request.client.host if request.client else None


ClientIp = Annotated[str | None, Depends(client_ip)]


def by_principal(
    code: EventCode,
    principal: Principal,
    ip: str | None,
    *,
    subject_id: str | None = None,
    **fields: FieldValue,
) -> AuditEvent:
    """An event done by the calling principal in their organisation."""
    return AuditEvent(
        code,
        org_id=principal.org_id,
        actor_id=principal.user_id,
        subject_id=subject_id,
        token_id=principal.token_id,
        ip=ip,
        fields=fields,
    )
