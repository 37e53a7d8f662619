"""The one exception tree of Keel.

Every error Keel raises on purpose descends from :class:`KeelError`. Each class
carries the HTTP status and problem type it maps to, so ``api/problems.py`` can
turn any of them into an RFC 9457 ``application/problem+json`` body in exactly
one place, and code below the API never imports anything HTTP-shaped.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KeelError(Exception):
    """Root of every deliberate Keel error."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions: dict[str, Any] = extensions
        self.headers: dict[str, str] = {}


# --- client errors -----------------------------------------------------------


class BadRequest(KeelError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidInput(KeelError):
    """The request was well formed but its content is not acceptable."""

    status = 422
    slug = "validation"
    title = "Invalid input"


class Unauthenticated(KeelError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.headers["WWW-Authenticate"] = 'Bearer realm="keel"'


class Forbidden(KeelError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(KeelError):
    """Also what another organisation's ids answer, so existence never leaks."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(KeelError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(KeelError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class RangeNotSatisfiable(KeelError):
    """A ``Range`` that selects no byte of the representation (RFC 9110 §15.5.17)."""

    status = 416
    slug = "range-not-satisfiable"
    title = "Range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the file has {size} bytes; no requested range starts inside it")
        self.headers["Content-Range"] = f"bytes */{size}"


class UnsupportedMediaType(KeelError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class NotReady(KeelError):
    """The resource exists but is not in a state that allows this yet."""

    status = 409
    slug = "not-ready"
    title = "Not ready"


# --- server side: dependencies -------------------------------------------------


class DependencyUnavailable(KeelError):
    """A dependency (database, storage, Redis, …) cannot serve right now."""

    status = 503
    slug = "dependency-unavailable"
    title = "Service temporarily unavailable"

    def __init__(
        self, detail: str | None = None, *, retry_after: int = 1, **extensions: Any
    ) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after
        self.headers["Retry-After"] = str(retry_after)


class StorageUnavailable(DependencyUnavailable):
    slug = "storage-unavailable"
    title = "File storage unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    slug = "database-unavailable"
    title = "Database unavailable"


class ConfigurationError(KeelError):
    """Settings or a policy file that Keel refuses to start with."""

    slug = "configuration"
    title = "Invalid configuration"


class SchemaBehind(ConfigurationError):
    """The database schema is not at the revision this code needs."""

    title = "Database schema behind the code"
