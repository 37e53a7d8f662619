"""What the pipeline knows about a route, declared once next to its handler.

A route's facts — its operation name, whether it takes an ``Idempotency-Key``
(and whether one is required unless the settings say otherwise), and its
shedding priority — are read by the route table, the idempotency steps, the
limits, load shedding and the OpenAPI document. They are written in one place,
the route's own decorator::

    @route(router.post, "", RouteFacts("recognitions.create", keys=Keys.REQUIRED),
           status_code=201, ...)
    async def create(...): ...

The limits policy selects the rules that apply to a request by its route
template and by this operation name (``applies_to`` in the policy file), so
the operation name is how a route says which limits apply to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from keel.guard.idempotency import IDEMPOTENCY_KEY_PARAMETER
from keel.guard.shed import Priority

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_ATTRIBUTE = "__keel_route_facts__"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Keys(Enum):
    """Whether a route takes an ``Idempotency-Key``."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"
    """Required unless ``KEEL_IDEMPOTENCY_REQUIRED_ROUTES`` leaves the route out."""


@dataclass(frozen=True, slots=True)
class RouteFacts:
    operation: str | None = None
    """The name the limits policy may target besides the route template."""
    keys: Keys = Keys.NONE
    priority: Priority | None = None
    """Load shedding class; by default reads are ``READ`` and everything else ``WRITE``."""

    @property
    def takes_keys(self) -> bool:
        return self.keys is not Keys.NONE

    def priority_for(self, method: str) -> Priority:
        if self.priority is not None:
            return self.priority
        return Priority.READ if method in _READ_METHODS else Priority.WRITE


UNDECLARED = RouteFacts()


def route(
    register: Callable[..., Callable[[Endpoint], Endpoint]],
    path: str,
    facts: RouteFacts,
    **options: Any,
) -> Callable[[Endpoint], Endpoint]:
    """``register`` (``router.post``, …) with ``facts`` attached to the endpoint.

    A route that takes keys documents the ``Idempotency-Key`` header parameter;
    whether it is required is filled in from the settings when the OpenAPI
    document is finished (:mod:`keel.http.openapi`).
    """
    if facts.takes_keys:
        extra = dict(options.pop("openapi_extra", None) or {})
        extra["parameters"] = [*extra.get("parameters", ()), IDEMPOTENCY_KEY_PARAMETER]
        options["openapi_extra"] = extra
    add = register(path, **options)

    def declare(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _ATTRIBUTE, facts)
        return add(endpoint)

    return declare


def facts_of(endpoint: Callable[..., Any]) -> RouteFacts:
    """The facts ``endpoint`` was declared with, or the defaults."""
    facts = getattr(endpoint, _ATTRIBUTE, UNDECLARED)
    return facts if isinstance(facts, RouteFacts) else UNDECLARED
