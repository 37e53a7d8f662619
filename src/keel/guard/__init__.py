"""Guards on the request path: what a request may spend, and what it may repeat.

``ratelimit/`` is the arithmetic and storage of rate limits, calendar quotas and
concurrency slots (its public API is re-exported here; see
:mod:`keel.guard.ratelimit` for how the pieces fit). Around it: the limit
decisions of a request (``limits.py``), load shedding (``shed.py``), the
storage quota (``storage_quota.py``), breach records (``breaches.py``),
per-organisation overrides (``overrides.py``), noisy neighbours (``noisy.py``,
``noisy_watch.py``), the audit and notification hooks (``notify.py``) and
``wiring.py``, which builds them from settings and hands each part its metrics
(:class:`~keel.guard.wiring.GuardMetrics`, on the app's registry).
``idempotency/`` holds Idempotency-Key: key rules, the claim store per backend,
the lease heartbeat and the guard's counters. Nothing here is HTTP: the ASGI
steps are in :mod:`keel.http` (``limits``, ``shed``, ``replay``, ``idempotency``).
"""

from keel.guard.ratelimit import *  # noqa: F403 - the subpackage's __all__ is the API
from keel.guard.ratelimit import __all__ as _ratelimit_all

__all__ = list(_ratelimit_all)
