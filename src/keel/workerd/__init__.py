"""``keel worker`` as a service: its HTTP probes and metrics, and the autoscaling supervisor.

``keel.jobs`` is the queue and the worker loop, with no HTTP in it; this package
is what runs a worker as an operated process beside it — the way ``keel.serve``
runs the API. It holds the only web framework a worker imports (a tiny
Starlette app under uvicorn, in ``http``), so neither ``keel.jobs`` nor
``keel.observe``'s framework-free core (``health``, ``lifecycle``, ``watchdog``)
needs one, and it never imports ``keel.api``.

- ``service``: one worker process with ``/live``, ``/ready`` and ``/metrics``.
- ``checks``: what makes a worker ready (database, schema, job store, lease loop).
- ``http``: the probe port, in the API's ``application/health+json``.
- ``metrics``: the worker's own registry (job, breaker and loop-lag families,
  built by ``service``), the port's exposition (queue depth read when scraped)
  and the supervisor's own families.
- ``scaling``: the pure decision of how many processes to run.
- ``supervisor``: ``--autoscale MIN..MAX``.
"""

from __future__ import annotations

from keel.workerd.scaling import (
    Autoscaler,
    Backlog,
    Direction,
    ScaleEvent,
    ScalePolicy,
    parse_range,
)
from keel.workerd.service import HttpPort, run_worker
from keel.workerd.supervisor import WorkerSupervisor, scale_policy

__all__ = [
    "Autoscaler",
    "Backlog",
    "Direction",
    "HttpPort",
    "ScaleEvent",
    "ScalePolicy",
    "WorkerSupervisor",
    "parse_range",
    "run_worker",
    "scale_policy",
]
