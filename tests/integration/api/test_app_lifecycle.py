"""The lifespan starts the app's parts in dependency order and stops them in reverse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from fastapi import FastAPI
from tests.support.app import running

from keel.api.services import Services


def recorded(
    calls: list[str], name: str, original: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        calls.append(name)
        await original()

    return call


async def test_parts_start_in_dependency_order_and_stop_in_reverse(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    services: Services = app.state.services
    calls: list[str] = []
    parts = {
        "audit": services.audit,
        "resilience": services.dependencies,
        "limits": services.limits,
    }
    for name, part in parts.items():
        monkeypatch.setattr(part, "start", recorded(calls, f"start {name}", part.start))
        monkeypatch.setattr(part, "stop", recorded(calls, f"stop {name}", part.stop))
    database = services.database
    monkeypatch.setattr(database, "dispose", recorded(calls, "stop database", database.dispose))
    async with running(app) as client:
        assert (await client.get("/live")).status_code == 200
        assert calls == ["start audit", "start resilience", "start limits"]
    assert calls[3:] == ["stop limits", "stop resilience", "stop audit", "stop database"]


def test_services_are_frozen(app: FastAPI) -> None:
    services: Services = app.state.services
    with pytest.raises(AttributeError):
        services.clock = services.clock  # type: ignore[misc]


def test_the_audit_log_and_the_quota_hook_are_given_at_construction(app: FastAPI) -> None:
    guard = app.state.services.limits.guard
    assert guard.breaches.audit is app.state.services.audit
    assert len(guard.threshold_hooks) == 1
