"""Redis cut under a real ``keel serve``: requests keep being served, then Redis returns.

The server reaches Redis (db 11) only through a TCP proxy of this test's own; cutting
the proxy is the outage, and the shared Redis is never touched. While it is cut, rate
limits are decided locally (``ratelimit.fallback.engaged``) and the ``redis`` breaker
opens; once it is back, the breaker's probe finds it and limits are shared again
(``ratelimit.fallback.recovered``). The breaker state lives in the same Redis, so an
operator's ``keel breakers force-open`` reaches this running server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from tests.support.app import SECRET, seeded_world_at
from tests.support.processes import keel_env, keel_server, run_keel
from tests.support.proxy_thread import ThreadedProxy, threaded_proxy
from tests.support.services import REDIS_HOST, REDIS_PORT, redis_url

pytestmark = pytest.mark.redis

DB = 11
DEADLINE = 20.0  # seconds any bounded wait below may take


@pytest.fixture
def direct_redis() -> Iterator[Redis]:
    client = Redis.from_url(redis_url(DB))
    client.flushdb()  # db 11 is this area's own
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def proxy(direct_redis: Redis) -> Iterator[ThreadedProxy]:
    with threaded_proxy(REDIS_HOST, REDIS_PORT) as running:
        yield running


def server_env(tmp_path: Path, redis: str) -> dict[str, str]:
    return keel_env(
        {
            "KEEL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}",
            "KEEL_SECRET_KEY": SECRET,
            "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
            "KEEL_REDIS_URL": redis,
            "KEEL_AUTH_CACHE_SECONDS": "0",
            "KEEL_BREAKER_MINIMUM_CALLS": "2",
            "KEEL_BREAKER_WINDOW_SIZE": "10",
            "KEEL_REDIS_BREAKER_WAIT_SECONDS": "0.5",
            "KEEL_BREAKER_SYNC_SECONDS": "0.2",
        }
    )


async def until(check: object, what: str) -> None:
    """Poll ``check`` (an async callable) until it is true; bounded in time and count."""
    deadline = time.monotonic() + DEADLINE
    for _ in range(400):
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE} s: {what}")


def keyed(headers: dict[str, str]) -> dict[str, str]:
    """Recognitions need an ``Idempotency-Key`` by default (issue 4)."""
    return {**headers, "Idempotency-Key": str(uuid.uuid4())}


async def test_requests_are_served_through_a_redis_outage_and_limits_come_back(
    tmp_path: Path, proxy: ThreadedProxy
) -> None:
    env = server_env(tmp_path, f"redis://127.0.0.1:{proxy.port}/{DB}")
    world = await seeded_world_at(env["KEEL_DATABASE_URL"])
    headers = world.alice.headers
    body = {"recipient_id": world.bob.id, "message": "thanks"}
    with keel_server(env, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            before = await http.get("/v1/recognitions", headers=headers)
            assert before.status_code == 200, before.text
            assert "ratelimit-policy" in before.headers

            proxy.cut()
            for _ in range(10):
                listed = await http.get("/v1/recognitions", headers=headers)
                assert listed.status_code == 200, listed.text
                assert "ratelimit-policy" in listed.headers  # still limited, locally
            created = await http.post("/v1/recognitions", json=body, headers=keyed(headers))
            assert created.status_code == 201, created.text
            assert (await http.get("/v1/users/me", headers=headers)).status_code == 200

            async def engaged() -> bool:  # log lines reach the file from a writer thread
                return "ratelimit.fallback.engaged" in server.log()

            await until(engaged, "the fallback was logged")

            proxy.restore()

            async def recovered() -> bool:
                response = await http.get("/v1/recognitions", headers=headers)
                assert response.status_code == 200, response.text
                return "ratelimit.fallback.recovered" in server.log()

            await until(recovered, "the limiter went back to Redis")
        opened = [
            line
            for line in server.log().splitlines()
            if "breaker_state_changed" in line and "breaker=redis" in line
        ]
        assert any("to_state=open" in line for line in opened), opened


async def test_an_operator_forcing_the_storage_breaker_open_is_obeyed_by_the_server(
    tmp_path: Path, proxy: ThreadedProxy, direct_redis: Redis
) -> None:
    env = server_env(tmp_path, f"redis://127.0.0.1:{proxy.port}/{DB}")
    world = await seeded_world_at(env["KEEL_DATABASE_URL"])
    headers = world.alice.headers
    files = {"file": ("a.txt", b"hello", "text/plain")}
    cli_env = {**env, "KEEL_REDIS_URL": redis_url(DB)}  # the operator reaches Redis directly
    with keel_server(env, tmp_path) as server:
        listed = run_keel(["breakers", "list", "--json"], cli_env, tmp_path)
        assert '"name": "storage"' in listed  # announced at start-up
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (
                await http.post("/v1/evidence", files=files, headers=headers)
            ).status_code == 201
            run_keel(["breakers", "force-open", "storage"], cli_env, tmp_path)

            async def refused() -> bool:
                response = await http.post("/v1/evidence", files=files, headers=headers)
                if response.status_code == 503:
                    assert int(response.headers["retry-after"]) >= 1
                    assert response.json()["reason"] == "breaker-open"
                    return True
                return False

            await until(refused, "the server obeyed force-open")
            recognised = await http.post(
                "/v1/recognitions",
                json={"recipient_id": world.bob.id, "message": "unaffected"},
                headers=keyed(headers),
            )
            assert recognised.status_code == 201

            run_keel(["breakers", "force-closed", "storage"], cli_env, tmp_path)

            async def accepted() -> bool:
                response = await http.post("/v1/evidence", files=files, headers=headers)
                return response.status_code == 201

            await until(accepted, "the server obeyed force-closed")
