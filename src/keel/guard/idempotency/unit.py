"""One keyed request's claim, as the route and the middleware see it.

The idempotency step (:mod:`keel.http.idempotency`) claims the key and keeps
an :class:`IdempotencyScope` for the request; the route stores its outcome
under it in its own transaction (:func:`keel.http.recorded.recorded`), and
the heartbeat keeps its lease. A replay repeats only :data:`REPLAYED_HEADERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from keel.clock import Clock
from keel.guard.idempotency.fingerprints import BodyHasher, MultipartHasher
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.store import IdempotencyStore

# Headers a replay repeats; everything else (dates, request ids, rate-limit
# headers, cookies) belongs to the request that is being answered now.
REPLAYED_HEADERS = frozenset(
    {"content-type", "content-language", "location", "link", "etag", "last-modified"}
)


def replayable(headers: Mapping[str, str] | list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((name.lower(), value) for name, value in items if name.lower() in REPLAYED_HEADERS)


@dataclass
class IdempotencyScope:
    """One keyed request's claim, as the route and the middleware see it."""

    store: IdempotencyStore
    ref: KeyRef
    owner: str
    clock: Clock
    fingerprint: str | None = None  # known at claim time for JSON bodies
    hasher: BodyHasher | MultipartHasher | None = field(default=None, repr=False)  # streamed bodies
    ran: bool = False  # the route entered its unit of work
    completed: bool = False  # the outcome was written in the business transaction
    lease_lost: bool = False

    def body_finished(self) -> None:
        if self.hasher is not None and self.fingerprint is None:
            self.fingerprint = self.hasher.finish()
