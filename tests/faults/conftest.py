"""Fault tests drive the app on a manual clock, so breaker waits and backoffs are instant."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from tests.support.app import app_for

from keel.settings import Settings
from keel.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> FastAPI:
    return app_for(settings, clock)
