"""Guards on the request path: rate limits and quotas (more to come: idempotency, shed).

Everything public is re-exported here; see :mod:`keel.guard.ratelimit` for how
the pieces fit and how middleware is meant to call them.
"""

from keel.guard.ratelimit import *  # noqa: F403 - the subpackage's __all__ is the API
from keel.guard.ratelimit import __all__ as _ratelimit_all

__all__ = list(_ratelimit_all)
