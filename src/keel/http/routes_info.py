"""What a request is, for labels: its route template and whether it is operational.

Labels and log fields carry the route *template* (``/v1/recognitions/{recognition_id}``),
never the raw path, so ids cannot explode metric cardinality. Probes and
``/metrics`` are operational: they are kept out of SLO metrics, traces and the
info-level access log.
"""

from __future__ import annotations

from starlette.types import Scope

from keel.guard.shed import PROBE_PATHS
from keel.http.state import peek

OPERATIONAL_PATHS = PROBE_PATHS
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``unmatched`` (404s, 405s before routing)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        # Refused before routing (a limit's 429): the limits middleware resolved the template.
        state = peek(scope)
        path = state.template if state is not None else None
    return path if isinstance(path, str) else UNMATCHED


def is_operational(path: str) -> bool:
    return path in OPERATIONAL_PATHS
