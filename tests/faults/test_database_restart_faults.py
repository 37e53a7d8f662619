"""A PostgreSQL restart under load, against a real ``keel serve``: 503s, never a 500.

The server reaches its own database (created, migrated, dropped by this test) only
through :class:`~tests.support.pg_restart.PgRestartProxy`, which plays a restart at the
wire protocol: every established session ends with ``FATAL 57P01`` (as a shutting-down
server ends them), and for the length of the outage every new connection is answered
``FATAL 57P03 the database system is starting up``. Mixed reads and writes arrive at
about 20 a second throughout. Issue 14 saw 3–8 ``500 internal`` per such outage and
connections closed without an answer.

What must hold: no 500 and no connection closed without an answer; every failure is
``503 database-unavailable`` (problem+json) with ``Retry-After``; the ``database``
breaker opens (some 503s say ``reason: breaker-open``) and ``/ready`` fails on the
database meanwhile; once the proxy forwards again, service is back within a few seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.support.app import SECRET, seeded_world_at
from tests.support.pg_restart import ThreadedPgRestartProxy, pg_restart_proxy
from tests.support.policies import generous_policy
from tests.support.processes import keel_env, keel_server
from tests.support.services import PG_HOST, PG_PORT

pytestmark = [pytest.mark.postgres, pytest.mark.fault]

PROBLEM = "application/problem+json"
DATABASE_UNAVAILABLE = "https://keel.dev/problems/database-unavailable"
INTERVAL = 0.05  # ~20 requests a second
BEFORE, OUTAGE, AFTER = 2.0, 6.0, 8.0  # seconds of each phase
RECOVERY_BOUND = 6.0  # the breaker's longest wait (4 s by default) plus a loaded machine's margin


@pytest.fixture
def proxy() -> Iterator[ThreadedPgRestartProxy]:
    with pg_restart_proxy(PG_HOST, PG_PORT) as running:
        yield running


@dataclass
class Outcome:
    sent_at: float  # seconds since the load started
    request: str
    status: int | None = None
    problem_type: str | None = None
    reason: str | None = None
    detail: str | None = None
    retry_after: str | None = None
    content_type: str | None = None
    error: str | None = None  # no answer: the connection failed


async def one(
    http: httpx.AsyncClient, started: float, index: int, headers: dict[str, str], body: dict
) -> Outcome:
    kind = index % 4
    outcome = Outcome(sent_at=time.monotonic() - started, request="")
    try:
        if kind == 0:
            outcome.request = "POST /v1/recognitions"
            keyed = {**headers, "Idempotency-Key": str(uuid.uuid4())}
            response = await http.post("/v1/recognitions", json=body, headers=keyed)
        else:
            path = ("/v1/recognitions", "/v1/users/me", "/v1/quotas")[kind - 1]
            outcome.request = f"GET {path}"
            response = await http.get(path, headers=headers)
    except httpx.HTTPError as error:
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
    outcome.status = response.status_code
    outcome.content_type = response.headers.get("content-type")
    outcome.retry_after = response.headers.get("retry-after")
    if response.status_code >= 400 and outcome.content_type == PROBLEM:
        problem = response.json()
        outcome.problem_type = problem.get("type")
        outcome.reason = problem.get("reason")
        outcome.detail = problem.get("detail")
    return outcome


async def test_a_database_restart_answers_503_with_retry_after_never_500_and_recovers(
    tmp_path: Path, database_name: str, proxy: ThreadedPgRestartProxy
) -> None:
    direct = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database_name}"
    proxied = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{database_name}"
    base = {
        "KEEL_SECRET_KEY": SECRET,
        "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
        "KEEL_RATELIMIT_POLICY": str(generous_policy(tmp_path)),
        "KEEL_DATABASE_TIMEOUT_SECONDS": "2",
        "KEEL_HEALTH_CACHE_SECONDS": "0",
        # Only the database may refuse a request here: no limit on requests in flight,
        # which pile up for a moment while the pool reconnects.
        "KEEL_CONCURRENCY_PER_USER": "1000",
        "KEEL_CONCURRENCY_PER_ORG": "1000",
    }
    world = await seeded_world_at(direct)
    headers = world.alice.headers
    body = {"recipient_id": world.bob.id, "message": "thanks for staying up"}

    env = keel_env({**base, "KEEL_DATABASE_URL": proxied})
    with keel_server(env, tmp_path) as server:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.url, timeout=20, limits=limits) as http:
            warm = await http.get("/v1/recognitions", headers=headers)
            assert warm.status_code == 200, warm.text

            started = time.monotonic()
            tasks: list[asyncio.Task[Outcome]] = []
            ready_during: list[httpx.Response] = []
            shut_down_at = restored_at = None
            total = int((BEFORE + OUTAGE + AFTER) / INTERVAL)
            for index in range(total):  # bounded in count, and so in time
                now = time.monotonic() - started
                if shut_down_at is None and now >= BEFORE:
                    await asyncio.to_thread(proxy.shut_down)
                    shut_down_at = time.monotonic() - started
                if shut_down_at is not None and restored_at is None:
                    if now >= BEFORE + OUTAGE:
                        await asyncio.to_thread(proxy.start_up)
                        restored_at = time.monotonic() - started
                    elif now >= BEFORE + OUTAGE / 2 and not ready_during:
                        ready_during.append(await http.get("/ready"))
                tasks.append(asyncio.create_task(one(http, started, index, headers, body)))
                await asyncio.sleep(INTERVAL)
            outcomes = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            ready_after = await http.get("/ready")

    assert shut_down_at is not None
    assert restored_at is not None
    assert proxy.proxy.terminated > 0, "no established session was ended with 57P01"
    assert proxy.proxy.refused > 0, "no connection was refused with 57P03"

    unanswered = [o for o in outcomes if o.error is not None]
    assert not unanswered, f"connections closed without an answer: {unanswered[:5]}"
    unexpected = [o for o in outcomes if o.status not in (200, 201, 503)]
    assert not unexpected, f"answers other than 2xx or 503: {unexpected[:5]}"

    refused = [o for o in outcomes if o.status == 503]
    assert len(refused) >= 10, f"the outage was not seen: {len(refused)} refusals"
    for outcome in refused:
        assert outcome.content_type == PROBLEM, outcome
        assert outcome.problem_type == DATABASE_UNAVAILABLE, outcome
        assert outcome.retry_after is not None, outcome
        assert int(outcome.retry_after) >= 1, outcome
    # The database breaker opened: requests were refused without waiting on the database.
    assert any(o.reason == "breaker-open" for o in refused), "the database breaker never opened"

    # /ready failed on the database during the outage, and passes again after it.
    assert ready_during, "/ready was not asked during the outage"
    assert ready_during[0].status_code == 503, ready_during[0].text
    checks = ready_during[0].json()["checks"]
    assert checks["database:responseTime"][0]["status"] == "fail", checks
    assert ready_after.status_code == 200, ready_after.text

    # Back within a few seconds of the restart, and for good.
    back = [o for o in outcomes if o.sent_at >= restored_at and o.status in (200, 201)]
    assert back, "no request succeeded after the database came back"
    first_back = min(o.sent_at for o in back) - restored_at
    assert first_back <= RECOVERY_BOUND, f"service came back {first_back:.1f} s after the restart"
    settled = [o for o in outcomes if o.sent_at >= restored_at + RECOVERY_BOUND]
    assert settled, "the load stopped too early to see the recovery hold"
    assert all(o.status in (200, 201) for o in settled), [o for o in settled if o.status >= 300]
