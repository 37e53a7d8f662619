"""The idempotency subtree of Keel's error tree.

Titles are the IETF draft's own words ("The Idempotency-Key HTTP Header
Field", Error Scenarios), so a client reading the problem sees what the
standard calls the situation; ``type`` slugs tell the cases apart.
"""

from __future__ import annotations

from typing import Any

from keel.errors import KeelError

DOCUMENTATION = "https://keel.dev/problems/"


class IdempotencyError(KeelError):
    """Root of the idempotency errors; each links its documentation (``rel=describedby``)."""

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.headers["Link"] = f'<{DOCUMENTATION}{self.slug}>; rel="describedby"; type="text/html"'


class IdempotencyKeyInvalid(IdempotencyError):
    status = 400
    slug = "idempotency-key-invalid"
    title = "Idempotency-Key is invalid"


class IdempotencyKeyRequired(IdempotencyError):
    status = 400
    slug = "idempotency-key-required"
    title = "Idempotency-Key is missing"


class IdempotencyKeyReused(IdempotencyError):
    """The key was first used with a different request (its fingerprint differs)."""

    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency-Key is already used"


class IdempotencyConflict(IdempotencyError):
    """A request with this key is still being processed."""

    status = 409
    slug = "idempotency-key-in-flight"
    title = "A request is outstanding for this Idempotency-Key"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **extensions: Any):
        super().__init__(detail, **extensions)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(retry_after)


class IdempotencyLeaseLost(IdempotencyConflict):
    """This request's claim expired and another request took the key over.

    Raised from the completion inside the business transaction, so the
    business write rolls back: the request that now owns the key is the one
    whose work counts.
    """

    slug = "idempotency-key-in-flight"

    @classmethod
    def taken_over(cls) -> IdempotencyLeaseLost:
        """The error every store raises when a completion finds its claim gone."""
        return cls(
            "this request's claim on the key expired and another request took it over; "
            "retry to get that request's outcome"
        )


class IdempotencyStateError(IdempotencyError):
    """A store tried a move that the claim state machine (``store.TRANSITIONS``) does
    not have: a bug in the store, never a client's doing, so it is not retried."""

    status = 500
    slug = "idempotency-state"
    title = "The idempotency key's state machine was violated"
