"""The job queue's errors, a small subtree of :class:`keel.errors.KeelError`."""

from __future__ import annotations

from keel.errors import DependencyUnavailable, KeelError


class PermanentJobError(KeelError):
    """Raised by a handler when retrying cannot help: the job goes straight to dead."""

    title = "Job failed permanently"


class JobStoreUnavailable(DependencyUnavailable):
    slug = "job-store-unavailable"
    title = "Job store unavailable"
