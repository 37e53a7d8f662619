"""Requests that miss the token cache together share one database check and one audit event."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keel.domain.principal import Plan, Principal, Role
from keel.domain.tokens import TOKEN_PREFIX, Authenticator
from keel.errors import Unauthenticated

TOKEN = TOKEN_PREFIX + "a" * 40
PRINCIPAL = Principal("u1", "o1", Role.MEMBER, "t1", Plan.FREE)


class GatedAuthenticator(Authenticator):
    """The database check waits for the test to open a gate, and is counted."""

    def __init__(self, outcome: Principal | Exception, **options: Any) -> None:
        super().__init__(database=None, secret=b"s" * 32, **options)  # type: ignore[arg-type]
        self.outcome = outcome
        self.gate = asyncio.Event()
        self.loads = 0

    async def _load(self, token_hash: str) -> Principal:
        self.loads += 1
        await self.gate.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class CountingObserver:
    def __init__(self) -> None:
        self.succeeded_for: list[str | None] = []

    async def succeeded(self, principal: Principal, ip: str | None) -> None:
        self.succeeded_for.append(ip)

    def failed(self, reason: str, ip: str | None) -> None:
        raise AssertionError("not on this path")


async def _together(auth: Authenticator, count: int) -> list[asyncio.Task[Principal]]:
    tasks = [asyncio.create_task(auth.authenticate(TOKEN, ip=f"10.0.0.{i}")) for i in range(count)]
    await asyncio.sleep(0)  # every request has missed the cache and is waiting
    return tasks


async def test_concurrent_misses_share_one_check_and_one_audit_event() -> None:
    observer = CountingObserver()
    auth = GatedAuthenticator(PRINCIPAL, observer=observer)
    tasks = await _together(auth, 8)
    auth.gate.set()
    assert await asyncio.gather(*tasks) == [PRINCIPAL] * 8
    assert auth.loads == 1
    assert observer.succeeded_for == ["10.0.0.0"]
    await auth.authenticate(TOKEN)  # cached now
    assert auth.loads == 1


async def test_a_refusal_reaches_every_waiter_and_is_not_cached() -> None:
    auth = GatedAuthenticator(Unauthenticated("invalid or revoked token"))
    tasks = await _together(auth, 4)
    auth.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, Unauthenticated) for result in results)
    assert auth.loads == 1
    auth.outcome = PRINCIPAL
    assert await auth.authenticate(TOKEN) == PRINCIPAL
    assert auth.loads == 2


async def test_when_the_checking_request_is_cancelled_a_waiter_checks_for_itself() -> None:
    auth = GatedAuthenticator(PRINCIPAL)
    leader, waiter = await _together(auth, 2)
    leader.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    auth.gate.set()
    assert await waiter == PRINCIPAL
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert auth.loads == 2


async def test_a_cancelled_waiter_leaves_the_check_running_for_the_others() -> None:
    auth = GatedAuthenticator(PRINCIPAL)
    leader, waiter = await _together(auth, 2)
    waiter.cancel()
    await asyncio.sleep(0)
    auth.gate.set()
    assert await leader == PRINCIPAL
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert auth.loads == 1
