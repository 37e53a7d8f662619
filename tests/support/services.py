"""Access to the local PostgreSQL and Redis for integration tests.

Without ``KEEL_REQUIRE_SERVICES=1`` a test whose service is down is skipped;
with it (as in CI) the test fails instead, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

PG_HOST = "127.0.0.1"
PG_PORT = 5432
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def services_required() -> bool:
    return os.environ.get("KEEL_REQUIRE_SERVICES", "") not in ("", "0", "false")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need(service: str, host: str, port: int) -> None:
    """Skip (or, in CI, fail) the calling test when ``service`` is not reachable."""
    if _reachable(host, port):
        return
    message = f"{service} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(message + " and KEEL_REQUIRE_SERVICES=1")
    pytest.skip(message)


def need_program(name: str, package: str) -> str:
    """The path of program ``name``; skip (or, in CI, fail) when it is not installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian package {package})"
    if services_required():
        pytest.fail(message + " and KEEL_REQUIRE_SERVICES=1")
    pytest.skip(message)


def redis_url(db: int) -> str:
    """A Redis URL on its own db index; each test area owns distinct indexes."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


@contextmanager
def flushed_redis(db: int) -> Iterator[str]:
    """``redis_url(db)``, emptied before and after: state shared by the processes of one test."""
    url = redis_url(db)
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def postgres_admin_dsn() -> str:
    need("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


def need_binary(name: str, *, fallback: str | None = None) -> str:
    """The path of an external program a test needs (``haproxy``); skip, or in CI fail,
    when it is not installed. ``.ci/run`` installs what CI needs."""
    found = shutil.which(name) or (fallback if fallback and os.path.exists(fallback) else None)
    if found is not None:
        return found
    message = f"{name} is not installed"
    if services_required():
        pytest.fail(message + " and KEEL_REQUIRE_SERVICES=1")
    pytest.skip(message)
