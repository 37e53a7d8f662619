"""Idempotency keys: no duplicate write across retries, crashes and processes.

A client sends ``Idempotency-Key`` on a creating ``POST``; the first request
with a key runs, its outcome is stored in the same transaction as its business
write, and every retry with the same key and the same request gets that
outcome back (``Idempotent-Replayed: true``) — answered by the replay step
in front of the limits, so a replay spends no rate or quota. This package is
the part free of HTTP: ``store.py`` for the key's state machine and the store
seam, implemented by ``sqlite.py``, ``postgresql.py`` (``backends.store_for``
picks one) and ``memory.py`` (for tests; also in ``keel.testing``);
``keys.py`` and ``fingerprints.py`` for what a key and a request are,
``heartbeat.py`` for how a live request keeps its short lease, ``unit.py`` for
a claim in flight. The request flow is :mod:`keel.http.idempotency` and
:mod:`keel.http.replay`; the hook a route stores its outcome with is
:mod:`keel.http.recorded`.
"""

from keel.guard.idempotency.backends import purge_expired, store_for
from keel.guard.idempotency.errors import (
    IdempotencyConflict,
    IdempotencyError,
    IdempotencyKeyInvalid,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    IdempotencyLeaseLost,
    IdempotencyStateError,
)
from keel.guard.idempotency.fingerprints import BodyHasher, canonical_json, fingerprint
from keel.guard.idempotency.keys import OPENAPI_PARAMETER as IDEMPOTENCY_KEY_PARAMETER
from keel.guard.idempotency.keys import KeyRef, key_from_headers, parse_key
from keel.guard.idempotency.memory import MemoryIdempotencyStore
from keel.guard.idempotency.postgresql import PostgresIdempotencyStore
from keel.guard.idempotency.sqlite import SqliteIdempotencyStore
from keel.guard.idempotency.store import (
    TRANSITIONS,
    Claim,
    ClaimResult,
    IdempotencyStore,
    KeyState,
    StoredResponse,
    Transition,
    move,
)
from keel.guard.idempotency.unit import IdempotencyScope

__all__ = [
    "IDEMPOTENCY_KEY_PARAMETER",
    "TRANSITIONS",
    "BodyHasher",
    "Claim",
    "ClaimResult",
    "IdempotencyConflict",
    "IdempotencyError",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyRequired",
    "IdempotencyKeyReused",
    "IdempotencyLeaseLost",
    "IdempotencyScope",
    "IdempotencyStateError",
    "IdempotencyStore",
    "KeyRef",
    "KeyState",
    "MemoryIdempotencyStore",
    "PostgresIdempotencyStore",
    "SqliteIdempotencyStore",
    "StoredResponse",
    "Transition",
    "canonical_json",
    "fingerprint",
    "key_from_headers",
    "move",
    "parse_key",
    "purge_expired",
    "store_for",
]
