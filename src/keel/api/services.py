"""The objects a request handler needs, built once by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def services_of(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services
