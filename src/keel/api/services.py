"""The objects a request handler needs, built once by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from keel.audit import Auditor
from keel.clock import Clock
from keel.db.engine import Database
from keel.domain.evidence import UploadRules
from keel.domain.tokens import Authenticator
from keel.guard.wiring import LimitsParts
from keel.settings import Settings
from keel.storage import BlobStore


@dataclass
class Services:
    settings: Settings
    database: Database
    store: BlobStore
    authenticator: Authenticator
    upload_rules: UploadRules
    clock: Clock
    limits: LimitsParts
    audit: Auditor  # the audit log (issue 6): record(session, AuditEvent(...))


def services_of(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services
