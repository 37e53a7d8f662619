"""``keel breakers``: list, force-open, force-closed and reset through the shared store.

A server's breakers are stand-ins here (real ``CircuitBreaker`` objects on the same Redis
store a server would use); ``tests/faults`` shows a real server obeying.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import asyncio as redis_asyncio
from tests.support.services import redis_url
from typer.testing import CliRunner

from keel.cli import app
from keel.resilience import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    RedisBreakerStateStore,
)

pytestmark = pytest.mark.redis

DB = 12


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    found = redis_url(DB)
    monkeypatch.setenv("KEEL_REDIS_URL", found)
    monkeypatch.delenv("KEEL_BREAKER_STORE_URL", raising=False)
    asyncio.run(_clear(found))
    yield found
    asyncio.run(_clear(found))


async def _clear(url: str) -> None:
    client = redis_asyncio.Redis.from_url(url)
    try:
        await client.delete("keel:breakers")
    finally:
        await client.aclose()


@pytest.fixture
async def server_breaker(url: str) -> AsyncIterator[CircuitBreaker]:
    """A breaker as a server holds it, announced in the store as at start-up."""
    store = RedisBreakerStateStore.from_url(url)
    breaker = CircuitBreaker("storage", BreakerConfig(sync_interval=0.01), store=store)
    await breaker.sync()
    yield breaker
    await store.aclose()


def keel(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["breakers", *args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def in_thread(*args: str) -> dict[str, object]:
    # The CLI runs its own event loop (asyncio.run); keep it off this test's loop.
    return await asyncio.to_thread(keel, *args)


async def adopted(breaker: CircuitBreaker) -> BreakerState:
    await asyncio.sleep(0.02)  # past the stand-in's 10 ms sync interval
    await breaker.sync()
    return breaker.state


async def test_list_shows_every_published_breaker(server_breaker: CircuitBreaker) -> None:
    listed = await in_thread("list")
    assert listed["breakers"] == [
        {
            "name": "storage",
            "state": "closed",
            "changed_at": listed["breakers"][0]["changed_at"],  # type: ignore[index]
            "reason": "operator",
            "origin": listed["breakers"][0]["origin"],  # type: ignore[index]
        }
    ]


async def test_force_open_is_obeyed_by_a_server_breaker(server_breaker: CircuitBreaker) -> None:
    answer = await in_thread("force-open", "storage")
    assert answer["state"] == "forced_open"
    assert answer["origin"] == "operator"
    assert await adopted(server_breaker) is BreakerState.FORCED_OPEN


async def test_force_closed_brings_a_forced_breaker_back(server_breaker: CircuitBreaker) -> None:
    await in_thread("force-open", "storage")
    assert await adopted(server_breaker) is BreakerState.FORCED_OPEN
    answer = await in_thread("force-closed", "storage")
    assert answer["state"] == "closed"
    assert await adopted(server_breaker) is BreakerState.CLOSED


async def test_reset_clears_the_window_of_a_closed_breaker(server_breaker: CircuitBreaker) -> None:
    async def fails() -> None:
        raise OSError("disk")

    for _ in range(3):
        with pytest.raises(OSError, match="disk"):
            await server_breaker.call(fails)
    assert server_breaker.snapshot().failed == 3
    answer = await in_thread("reset", "storage")
    assert answer["reason"] == "reset"
    assert await adopted(server_breaker) is BreakerState.CLOSED
    assert server_breaker.snapshot().calls == 0


def test_a_name_no_server_published_is_refused_unless_allowed(url: str) -> None:
    refused = CliRunner().invoke(app, ["breakers", "force-open", "stroage"])
    assert refused.exit_code == 1
    assert "no circuit breaker named 'stroage'" in refused.output
    allowed = keel("force-open", "webhooks", "--allow-unknown")
    assert allowed["state"] == "forced_open"


def test_list_prints_a_table(url: str) -> None:
    keel("force-open", "webhooks", "--allow-unknown")
    result = CliRunner().invoke(app, ["breakers", "list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "webhooks" in result.output
    assert "forced_open" in result.output


def test_without_a_shared_store_the_commands_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_REDIS_URL", raising=False)
    monkeypatch.delenv("KEEL_BREAKER_STORE_URL", raising=False)
    result = CliRunner().invoke(app, ["breakers", "list"])
    assert result.exit_code == 1
    assert "no shared breaker store" in result.output
