"""``keel_serve_worker_restarts_total``: workers the supervisor replaced, and why.

The supervisor of ``keel serve --workers N`` is the parent process, which
serves no ``/metrics`` of its own. It writes its count into the multiprocess
directory the workers already share, where every worker's ``/metrics`` sums
it with theirs; the workers declare the same counter at zero so that the
family is there in every deployment shape, restarts or not.

``reason``: ``unresponsive`` (alive but no answer to the health ping within
``KEEL_SERVE_WORKER_HEALTHCHECK_SECONDS``: killed and replaced) or ``exited``
(the worker died on its own).
"""

from __future__ import annotations

import os
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.values import MultiProcessValue

from keel.observe.metrics_directory import MULTIPROC_ENV

NAME = "keel_serve_worker_restarts"
HELP = "Workers the supervisor of keel serve --workers N replaced, by reason."
Reason = Literal["unresponsive", "exited"]
REASONS: tuple[Reason, ...] = ("unresponsive", "exited")


def declare(registry: CollectorRegistry) -> Counter:
    """The workers' side: the family, at zero for each reason."""
    counter = Counter(NAME, HELP, ["reason"], registry=registry)
    for reason in REASONS:
        counter.labels(reason=reason)
    return counter


class _Value(Protocol):
    def inc(self, amount: float) -> None: ...


class RestartCount:
    """The supervisor's side: counts into the shared directory (when there is one).

    prometheus_client picks its value class once, when first imported — in the
    parent, before ``keel serve`` has set the directory — so the multiprocess
    value is asked for explicitly, with the layout the workers' ``Counter`` uses.
    """

    def __init__(self) -> None:
        self.counts: dict[Reason, int] = dict.fromkeys(REASONS, 0)
        self._values: dict[Reason, _Value] = {}
        if os.environ.get(MULTIPROC_ENV):
            value_class = MultiProcessValue()  # type: ignore[no-untyped-call]
            for reason in REASONS:
                self._values[reason] = value_class(
                    "counter", NAME, NAME + "_total", ("reason",), (reason,), HELP
                )

    def add(self, reason: Reason) -> None:
        self.counts[reason] += 1
        value = self._values.get(reason)
        if value is not None:
            value.inc(1)
