"""Fault tests drive the app on a manual clock, so breaker waits and backoffs are instant;
those that cut PostgreSQL with a proxy get a scratch database of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from tests.support.app import app_for
from tests.support.databases import scratch_postgres_database

from keel.settings import Settings
from keel.testing import ManualClock, no_retry_delays


@pytest.fixture(autouse=True)
def _no_retry_delays() -> Iterator[None]:
    """The app under test retries a failing dependency at once: the manual clock already
    bounds the retries, and only the real sleeps between them would remain."""
    with no_retry_delays():
        yield


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> FastAPI:
    return app_for(settings, clock)


@pytest.fixture
def database_name() -> Iterator[str]:
    with scratch_postgres_database("keel_faults") as name:
        yield name
