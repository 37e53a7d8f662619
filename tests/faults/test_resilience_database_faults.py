"""PostgreSQL cut under a real ``keel serve``: 503 with ``Retry-After``, never a 500, and
recovery within seconds of its return, without restarting Keel.

The server reaches a database of this test's own (created, migrated with
``keel migrate upgrade``, dropped) only through a TCP proxy; cutting the proxy is the
outage, and the shared PostgreSQL is never stopped.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.app import SECRET, seeded_world_at
from tests.support.processes import keel_env, keel_server
from tests.support.proxy_thread import ThreadedProxy, threaded_proxy
from tests.support.services import PG_HOST, PG_PORT

pytestmark = pytest.mark.postgres

PROBLEM = "application/problem+json"
DEADLINE = 20.0


def keyed(headers: dict[str, str]) -> dict[str, str]:
    """Recognitions need an ``Idempotency-Key`` by default (issue 4)."""
    return {**headers, "Idempotency-Key": str(uuid.uuid4())}


@pytest.fixture
def proxy() -> Iterator[ThreadedProxy]:
    with threaded_proxy(PG_HOST, PG_PORT) as running:
        yield running


async def test_database_outage_is_503_everywhere_it_is_needed_then_recovers(
    tmp_path: Path, database_name: str, proxy: ThreadedProxy
) -> None:
    direct = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database_name}"
    proxied = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{database_name}"
    base = {
        "KEEL_SECRET_KEY": SECRET,
        "KEEL_STORAGE_DIR": str(tmp_path / "blobs"),
        # Tokens stay cached through the cut, so the requests below get past
        # authentication and meet the outage in the route itself.
        "KEEL_AUTH_CACHE_SECONDS": "120",
        "KEEL_DATABASE_TIMEOUT_SECONDS": "1",
    }
    world = await seeded_world_at(direct)
    headers = world.alice.headers
    body = {"recipient_id": world.bob.id, "message": "thanks"}

    env = keel_env({**base, "KEEL_DATABASE_URL": proxied})
    with keel_server(env, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
            created = await http.post("/v1/recognitions", json=body, headers=keyed(headers))
            assert created.status_code == 201, created.text
            recognition_id = created.json()["id"]

            files = {"file": ("a.txt", b"hello", "text/plain")}
            uploaded = await http.post("/v1/evidence", files=files, headers=headers)
            assert uploaded.status_code == 201, uploaded.text
            evidence_id = uploaded.json()["id"]
            assert (await http.get("/v1/users/me", headers=headers)).status_code == 200
            proxy.cut()
            needing_the_database = [
                ("GET", "/v1/recognitions", None),
                ("GET", f"/v1/recognitions/{recognition_id}", None),
                ("POST", "/v1/recognitions", body),
                ("GET", "/v1/users/me", None),
                ("GET", f"/v1/evidence/{evidence_id}", None),
                ("GET", f"/v1/evidence/{evidence_id}/content", None),
                ("GET", "/v1/quotas", None),
            ]
            for method, path, payload in needing_the_database:
                sent = keyed(headers) if method == "POST" else headers
                down = await http.request(method, path, json=payload, headers=sent)
                assert down.status_code == 503, (method, path, down.status_code, down.text)
                assert down.headers["content-type"] == PROBLEM
                assert int(down.headers["retry-after"]) >= 1
                assert down.json()["type"].endswith("/database-unavailable"), down.text

            live = await http.get("/live")
            assert live.status_code == 200, live.text  # the process is fine; restart nothing
            assert (await http.get("/ready")).status_code == 503

            proxy.restore()
            deadline = time.monotonic() + DEADLINE
            for _ in range(200):  # recovery without a restart, bounded in count and time
                answer = await http.get("/v1/recognitions", headers=headers)
                assert answer.status_code in (200, 503), answer.text  # never a 500
                if answer.status_code == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert answer.status_code == 200, "Keel did not recover after the database returned"
            again = await http.post("/v1/recognitions", json=body, headers=keyed(headers))
            assert again.status_code == 201, again.text
