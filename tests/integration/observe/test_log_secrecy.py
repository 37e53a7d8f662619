"""No secret in logs, spans or error bodies, whatever error a request ends in (in-process).

The in-process half of the log-secrecy check: here an unhandled exception can be
provoked (a route added for the test raises with tokens, the database URL and the
settings in its frame locals and its message), and every span is captured with
an in-memory exporter. tests/e2e/test_log_secrecy_serve.py runs the client-
reachable paths against a real ``keel serve``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from tests.support.app import SECRET, World, make_settings
from tests.support.secrecy import (
    AUDIT_KEYS,
    drive_error_paths,
    leaks,
    secrets_of,
    with_password,
)

from keel.observe.log_lines import MAX_LINE_CHARS
from keel.observe.logs import configure_logging, flush_logs
from keel.settings import Settings


@pytest.fixture(params=["console", "json"])
def log_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, log_format: str) -> Settings:
    return make_settings(
        with_password(database_url),
        str(tmp_path / "blobs"),
        log_format=log_format,
        audit_keys=SecretStr(AUDIT_KEYS),
        max_upload_bytes=1024,
        otel_sampling_ratio=1.0,
    )


@pytest.fixture
def captured(app: FastAPI, settings: Settings) -> Iterator[io.StringIO]:
    """The app's own logging configuration, writing into a buffer."""
    buffer = io.StringIO()
    configure_logging(settings, stream=buffer)
    yield buffer
    configure_logging(settings)


@pytest.fixture
def spans(app: FastAPI) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    app.state.services.observe.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def add_failing_route(app: FastAPI, settings: Settings, world: World) -> None:
    """A bug: an exception whose frame holds headers, settings and a URL with its password."""

    @app.get("/v1/boom")
    async def boom() -> None:
        headers = [(b"authorization", f"Bearer {world.alice.token}".encode())]
        service_settings = settings
        url = settings.database_url
        raise RuntimeError(
            f"lost {url} while serving {headers!r} with {service_settings!r} "
            f"and key {settings.secret_key.get_secret_value()}"
        )


async def test_no_secret_reaches_a_log_line_a_span_or_an_error_body(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    world: World,
    captured: io.StringIO,
    spans: InMemorySpanExporter,
) -> None:
    add_failing_route(app, settings, world)
    seen = await drive_error_paths(client, world)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as raw:
        for _ in range(3):
            seen.note(await raw.get("/v1/boom", headers=world.alice.headers))
    assert {401, 403, 404, 405, 409, 413, 415, 422, 500} <= set(seen.statuses), seen.statuses
    assert flush_logs()
    log = captured.getvalue()
    assert log.count("unhandled_exception") == 3
    assert "RuntimeError: lost " in log  # the traceback and its message are kept …
    finished = spans.get_finished_spans()
    assert any(event.name == "exception" for span in finished for event in span.events)
    texts = [log, *(span.to_json() for span in finished), *seen.bodies]
    secrets = secrets_of(world, SECRET)
    assert leaks(texts, secrets) == []  # … the secrets are not
    assert max(len(line) for line in log.splitlines()) <= MAX_LINE_CHARS
