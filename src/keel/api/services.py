"""The objects a request handler needs, built once by ``create_app``.

:class:`Services` holds every part; a ``/v1`` handler declares only the parts it
uses, as one of the narrow protocols below (``Recording``, ``Exporting``, …),
which ``Services`` satisfies. A handler therefore cannot reach a part it did not
declare (mypy holds it), at no cost per request: FastAPI resolves one dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from starlette.requests import HTTPConnection

from keel.audit import Auditor
from keel.clock import Clock
from keel.db.engine import Database
from keel.domain.evidence import UploadRules
from keel.domain.tokens import Authenticator
from keel.guard.idempotency import IdempotencyStore
from keel.guard.wiring import LimitsParts
from keel.http.routing import RouteTable
from keel.resilience import Dependencies, DependencyPool
from keel.settings import Settings
from keel.storage import BlobStore

if TYPE_CHECKING:
    from keel.metric_series import AppMetrics
    from keel.observe import Observability
    from keel.observe.health import HealthRegistry


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    store: BlobStore
    authenticator: Authenticator
    upload_rules: UploadRules
    clock: Clock
    limits: LimitsParts
    routes: RouteTable  # every route with its facts, for the steps in front of the router
    idempotency: IdempotencyStore
    audit: Auditor  # the audit log: record(session, AuditEvent(...))
    dependencies: Dependencies
    """Storage and Redis behind timeouts, bulkheads, breakers and retries."""
    webhooks: DependencyPool
    """The same per webhook host, in ``dependencies.registry`` (``keel breakers``)."""
    metrics: AppMetrics
    """Every part's metrics, on the app's one registry (``/metrics`` renders it)."""
    observe: Observability  # health registry, lifecycle, metrics, tracer

    @property
    def health(self) -> HealthRegistry:
        """Where every part registers its readiness checks: ``services.health.register(...)``."""
        return self.observe.health


class Reading(Protocol):
    """The database alone (``/v1/users``)."""

    @property
    def database(self) -> Database: ...


class Auditing(Reading, Protocol):
    """The audit log and the database it reads (``/v1/audit``)."""

    @property
    def audit(self) -> Auditor: ...


class Recording(Auditing, Protocol):
    """A domain write with its audit events, on the app's clock (``/v1/recognitions``)."""

    @property
    def clock(self) -> Clock: ...


class Exporting(Recording, Protocol):
    """A write that also reads or writes blobs (``/v1/exports``)."""

    @property
    def store(self) -> BlobStore: ...


class Uploading(Exporting, Protocol):
    """Uploads, checked against the upload rules and the storage quota (``/v1/evidence``)."""

    @property
    def upload_rules(self) -> UploadRules: ...
    @property
    def limits(self) -> LimitsParts: ...


class Quotas(Reading, Protocol):
    """The limits and the database (``/v1/quotas``)."""

    @property
    def limits(self) -> LimitsParts: ...


def services_of(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services
