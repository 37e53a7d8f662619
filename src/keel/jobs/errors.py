"""The job queue's errors, a small subtree of :class:`keel.errors.KeelError`."""

from __future__ import annotations

from keel.errors import DependencyUnavailable, KeelError


class PermanentJobError(KeelError):
    """Raised by a handler when retrying cannot help: the job goes straight to dead."""

    title = "Job failed permanently"


class JobDeferred(KeelError):
    """Raised by a handler that could not even try: run the job later, attempt unspent.

    For refusals on Keel's side — a webhook host's breaker is open, its bulkhead is
    full — where nothing reached the other side, so counting an attempt would let an
    outage of someone else's server dead-letter jobs that were never tried. The job goes
    back to ``retrying`` after ``retry_after`` seconds (plus jitter, so a queue of
    deferred jobs does not return in one burst). Bounded all the same: a breaker lets
    probes through once its wait is over, and a probe that fails spends its attempt.
    """

    title = "Job deferred"

    def __init__(self, detail: str | None = None, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = max(0.0, float(retry_after))


class JobStoreUnavailable(DependencyUnavailable):
    slug = "job-store-unavailable"
    title = "Job store unavailable"
