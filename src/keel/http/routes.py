"""The routers the app serves under ``/v1``: the one list the route table is built from.

Adding a route means writing its handler with its facts
(:func:`keel.http.facts.route`) in one of these routers; a new router joins here.
"""

from __future__ import annotations

from keel.api.routes import audit, evidence, exports, quotas, recognitions, users
from keel.http.routing import RouteTable

ROUTERS = (
    recognitions.router,
    evidence.router,
    exports.router,
    users.router,
    quotas.router,
    audit.router,
)


def route_table() -> RouteTable:
    return RouteTable(ROUTERS)
