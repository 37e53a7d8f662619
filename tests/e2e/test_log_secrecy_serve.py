"""Log secrecy against a real ``keel serve``: every error a client can cause, then grep.

Both log formats, each on its own profile and database: ``console`` in ``dev`` on
SQLite, ``json`` in ``prod`` on PostgreSQL with a password in the database URL
(trust auth ignores it, so the server starts while the password is in its
settings). The server knows its secret key, audit keys and an OTLP endpoint (a
collector in the test, so spans are searched too); the client sends live,
guessed and misplaced tokens down every error path it can reach. Afterwards the
server is stopped with SIGTERM — its last lines must be flushed — and its log,
the exported spans and every response are searched for every secret: none is
found, and no log line is longer than the bound.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keel.audit.signing import write_private_key
from keel.observe.log_lines import MAX_LINE_CHARS
from tests.support.app import SECRET, seed_database
from tests.support.processes import server_env, start_server
from tests.support.secrecy import (
    AUDIT_KEYS,
    SpanCollector,
    drive_error_paths,
    leaks,
    secrets_of,
    with_password,
)

pytestmark = pytest.mark.e2e

# Generous for everything but one route, where a second request is refused (429).
POLICY = """
version = 1
[[limits]]
name = "api-user"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 10000
period_seconds = 60
burst = 1000

[[limits]]
name = "me-tight"
key = "user"
applies_to = ["GET /v1/users/me"]
algorithm = "rate"
limit = 1
period_seconds = 3600
burst = 1
"""


@pytest.mark.parametrize(
    ("backend", "log_format", "profile"),
    [("sqlite", "console", "dev"), ("postgres", "json", "prod")],
)
async def test_no_secret_reaches_the_log_the_spans_or_a_response_of_a_real_server(
    database_url: str, tmp_path: Path, log_format: str, profile: str
) -> None:
    world = await seed_database(database_url)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    signing_key = tmp_path / "audit-signing.pem"
    write_private_key(signing_key, Ed25519PrivateKey.generate())
    with SpanCollector() as collector:
        env = server_env(
            with_password(database_url),
            tmp_path,
            {
                "KEEL_ENV": profile,
                "KEEL_LOG_FORMAT": log_format,
                "KEEL_AUDIT_KEYS": AUDIT_KEYS,
                "KEEL_AUDIT_SIGNING_KEY_PATH": str(signing_key),
                "KEEL_MAX_UPLOAD_BYTES": "1024",
                "KEEL_RATELIMIT_POLICY": str(policy),
                "KEEL_OTEL_ENDPOINT": collector.url,
                "KEEL_OTEL_SAMPLING_RATIO": "1.0",
                "KEEL_INPROCESS_WORKER": "off",
                "KEEL_SHUTDOWN_DRAIN_SECONDS": "0.5",
            },
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        server = start_server(env, tmp_path, name=f"secrecy-{log_format}")
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
                seen = await drive_error_paths(client, world)
        finally:
            server.stop()
        assert server.process.returncode == 0
    assert {401, 403, 404, 405, 409, 413, 415, 422, 429} <= set(seen.statuses), seen.statuses
    assert 500 not in seen.statuses
    log = server.log()
    assert "keel_stopped" in log
    assert "Finished server process" in log.splitlines()[-1]  # flushed at exit, nothing lost
    assert collector.received, "the server exported no spans"
    pem_body = "".join(signing_key.read_text().splitlines()[1:-1])
    secrets = secrets_of(world, SECRET, pem_body)
    assert leaks([log, collector.text(), *seen.bodies], secrets) == []
    assert max(len(line) for line in log.splitlines()) <= MAX_LINE_CHARS
