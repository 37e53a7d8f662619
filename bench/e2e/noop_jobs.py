"""A job type that does nothing, for measuring a real ``keel worker``'s own cost per job.

Loaded by the worker through ``KEEL_JOBS_MODULES=noop_jobs`` (this folder on its
``PYTHONPATH``); ``before_after.py`` enqueues ``bench.noop`` jobs and times how
fast one worker process finishes them.
"""

from __future__ import annotations

from typing import Any

from keel.jobs.registry import JobType

NAME = "bench.noop"


async def _noop(context: Any) -> None:
    return None


JOB_TYPES = (JobType(NAME, _noop),)
