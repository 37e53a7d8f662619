"""Probes, /metrics, /version, request ids, access lines and traces over HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from tests.support.app import World, app_for, make_settings, running, seed_world
from tests.support.services import redis_url

from keel.db.engine import Database
from keel.deploy.release import current_release
from keel.observe import checks
from keel.observe.health import HealthRegistry, Status
from keel.observe.logs import configure_logging, flush_logs
from keel.observe.tracing import instrument_httpx_client, instrument_redis_client
from keel.observe.version import settings_fingerprint
from keel.settings import Settings
from keel.testing import ManualClock

HEALTH = "application/health+json"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
INCOMING = f"00-{TRACE_ID}-b7ad6b7169203331-01"

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def log_lines(settings: Settings, app: FastAPI) -> Iterator[io.StringIO]:
    """Everything logged while the test runs, as JSON lines (after the app configured logs)."""
    buffer = io.StringIO()
    configure_logging(settings.model_copy(update={"log_format": "json"}), stream=buffer)
    yield buffer
    configure_logging(settings)


def written(buffer: io.StringIO) -> str:
    """What was logged so far: lines are written by a writer thread, so flush first."""
    assert flush_logs()
    return buffer.getvalue()


def records(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in written(buffer).splitlines() if line.startswith("{")]


async def _recognition(client: httpx.AsyncClient, world: World) -> str:
    response = await client.post(
        "/v1/recognitions",
        json={"recipient_id": world.bob.id, "message": "observed"},
        headers=world.alice.headers,
    )
    assert response.status_code == 201
    return str(response.json()["id"])


# --- health -------------------------------------------------------------------


async def test_ready_passes_with_every_dependency_checked(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH
    assert response.headers["cache-control"] == "max-age=2"
    body = response.json()
    assert body["status"] == "pass"
    assert {"version", "releaseId", "serviceId", "checks"} <= set(body)
    assert set(body["checks"]) == {
        "database:responseTime",
        "schema:revision",
        "storage:responseTime",
        "jobs:responseTime",
        "ratelimit:mode",
    }
    for entries in body["checks"].values():
        for entry in entries:
            assert {"componentType", "observedValue", "status", "time"} <= set(entry)
            assert "output" not in entry


@sqlite_only
async def test_live_reports_loop_lag_and_never_a_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH
    checks = response.json()["checks"]
    assert list(checks) == ["eventloop:lag"]
    assert checks["eventloop:lag"][0]["observedUnit"] == "s"
    verbose = await client.get("/live?verbose")
    assert verbose.text.splitlines() == ["[+]eventloop ok", "livez check passed"]


@sqlite_only
async def test_health_is_a_cheap_summary(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "pass"
    assert body["releaseId"] == "dev"
    [uptime] = body["checks"]["uptime:uptime"]
    assert uptime["observedUnit"] == "s"


@sqlite_only
async def test_verbose_and_exclude_follow_kubernetes_habits(client: httpx.AsyncClient) -> None:
    verbose = await client.get("/ready?verbose")
    assert verbose.status_code == 200
    assert verbose.headers["content-type"].startswith("text/plain")
    assert verbose.text.splitlines() == [
        "[+]database ok",
        "[+]schema ok",
        "[+]storage ok",
        "[+]jobs ok",
        "[+]ratelimit ok",
        "readyz check passed",
    ]
    excluded = await client.get(
        "/ready?verbose&exclude=storage&exclude=schema&exclude=jobs&exclude=ratelimit"
    )
    assert excluded.text.splitlines() == ["[+]database ok", "readyz check passed"]


async def test_a_schema_behind_the_code_fails_readiness(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app.state.services.database.write() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    [entry] = body["checks"]["schema:revision"]
    assert entry["status"] == "fail"
    assert entry["output"].startswith("schema behind")
    live = await client.get("/live")
    assert live.status_code == 200


@sqlite_only
async def test_unusable_storage_warns_with_a_reason_and_keeps_the_instance_ready(
    database_url: str, tmp_path: Path
) -> None:
    """Storage is shared by every instance: failing /ready for it would drain them all."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the blob store should be")
    app = app_for(make_settings(database_url, str(blocker)))
    async with running(app) as client:
        response = await client.get("/ready?verbose")
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert lines[0] == "[+]database ok"
    assert lines[2].startswith("[+]storage warn: ")
    assert lines[-1] == "readyz check passed"


@sqlite_only
async def test_redis_down_only_warns(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, str(tmp_path / "b"), redis_url="redis://127.0.0.1:1/6")
    async with running(app_for(settings)) as client:
        response = await client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "warn"
    [entry] = body["checks"]["redis:responseTime"]
    assert entry["status"] == "warn"
    assert entry["output"]


@sqlite_only
async def test_redis_up_passes(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, str(tmp_path / "b"), redis_url=redis_url(6))
    async with running(app_for(settings)) as client:
        response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["redis:responseTime"][0]["status"] == "pass"


@sqlite_only
async def test_draining_fails_ready_at_once_while_live_stays_up(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/ready")).status_code == 200
    app.state.services.observe.lifecycle.begin_draining()
    ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.headers["cache-control"] == "max-age=0"
    assert ready.json()["checks"]["lifecycle:draining"][0]["output"].startswith("draining")
    assert (await client.get("/live")).status_code == 200
    assert (await client.get("/health")).status_code == 503


# --- metrics ------------------------------------------------------------------


@sqlite_only
async def test_metrics_label_routes_by_template_and_probes_out_of_the_slo(
    client: httpx.AsyncClient, world: World
) -> None:
    recognition_id = await _recognition(client, world)
    for _ in range(3):
        fetched = await client.get(f"/v1/recognitions/{recognition_id}", headers=world.bob.headers)
        assert fetched.status_code == 200
    await client.get("/ready")
    await client.get("/nowhere/at/all")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    assert recognition_id not in body
    assert (
        'http_server_request_duration_seconds_count{http_request_method="GET",'
        'http_response_status_code="200",http_route="/v1/recognitions/{recognition_id}",'
        'slo="true"} 3.0'
    ) in body
    assert 'http_route="/ready",slo="false"' in body
    assert 'http_route="unmatched",slo="true"' in body
    assert 'le="0.3"' in body
    assert "http_server_active_requests{" in body
    assert 'db_client_connection_count{db_client_connection_pool_name="main"' in body
    assert 'keel_build_info{git_sha="unknown",release_id="dev",version=' in body


@sqlite_only
async def test_metrics_has_no_trailing_slash_redirect(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics/")
    assert response.status_code == 404


@sqlite_only
async def test_slo_threshold_setting_is_a_bucket(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, str(tmp_path / "b"), slo_latency_seconds=0.42)
    async with running(app_for(settings)) as client:
        await client.get("/live")
        body = (await client.get("/metrics")).text
    assert 'le="0.42"' in body


# --- version -------------------------------------------------------------------


@sqlite_only
async def test_version_says_what_runs_without_revealing_secrets(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/version")
    assert response.status_code == 200
    body = response.json()
    assert body["schema_revision"] == body["schema_head"]
    assert {"version", "git_sha", "release_id", "settings_fingerprint"} <= set(body)
    # The release as ``keel deploy`` records it: the identity a deployment checks.
    release = current_release(settings)
    assert body["release"] == {
        "version": release.version,
        "git_sha": settings.git_sha,
        "migration_head": release.migration_head,
    }
    fingerprint = body["settings_fingerprint"]
    assert "secret_key" not in fingerprint["names"]
    assert "database_url" in fingerprint["names"]
    assert settings.secret_key.get_secret_value() not in response.text
    assert settings.database_url not in response.text
    assert len(fingerprint["hash"]) == 32


@sqlite_only
async def test_fingerprint_changes_with_a_setting_and_is_stable_otherwise(
    database_url: str, tmp_path: Path
) -> None:
    base = make_settings(database_url, str(tmp_path / "b"))
    same = make_settings(database_url, str(tmp_path / "b"))
    changed = make_settings(database_url, str(tmp_path / "b"), auth_cache_seconds=9)
    assert settings_fingerprint(base) == settings_fingerprint(same)
    first, second = settings_fingerprint(base), settings_fingerprint(changed)
    assert first["hash"] != second["hash"]
    differing = {n for n in first["settings"] if first["settings"][n] != second["settings"][n]}
    assert differing == {"auth_cache_seconds"}


# --- request ids, access log, traces ----------------------------------------------


@sqlite_only
async def test_request_id_is_honoured_when_valid_and_generated_otherwise(
    client: httpx.AsyncClient,
) -> None:
    kept = await client.get("/live", headers={"X-Request-Id": "req-123.abc"})
    assert kept.headers["x-request-id"] == "req-123.abc"
    replaced = await client.get("/live", headers={"X-Request-Id": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] not in ("", "bad id\twith spaces")
    unauthenticated = await client.get("/v1/recognitions")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["x-request-id"]
    missing = await client.get("/no/such/thing")
    assert missing.headers["x-request-id"]


@sqlite_only
async def test_one_request_is_one_trace_with_db_children_and_the_log_carries_it(
    app: FastAPI, client: httpx.AsyncClient, world: World, log_lines: io.StringIO
) -> None:
    exporter = InMemorySpanExporter()
    app.state.services.observe.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    recognition_id = await _recognition(client, world)
    exporter.clear()
    response = await client.get(
        f"/v1/recognitions/{recognition_id}",
        headers={**world.bob.headers, "traceparent": INCOMING, "X-Request-Id": "trace-test-1"},
    )
    assert response.status_code == 200
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind.name == "SERVER"]
    assert len(servers) == 1
    server = servers[0]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.name == "GET /v1/recognitions/{recognition_id}"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/recognitions/{recognition_id}"
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    assert not [s for s in spans if s.name.endswith(("http send", "http receive"))]
    database_spans = [s for s in spans if s.attributes and "db.system" in str(s.attributes)]
    database_spans = database_spans or [s for s in spans if s.kind.name == "CLIENT"]
    assert database_spans, [s.name for s in spans]
    for span in database_spans:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id
        assert span.context.trace_id == server.context.trace_id
    span_id = format(server.context.span_id, "016x")
    assert response.headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"
    [access] = [r for r in records(log_lines) if r.get("request_id") == "trace-test-1"]
    assert access["event"] == "http_request"
    assert access["trace_id"] == TRACE_ID
    assert access["span_id"] == span_id
    assert access["route"] == "/v1/recognitions/{recognition_id}"
    assert access["status"] == 200
    assert access["method"] == "GET"
    assert isinstance(access["duration_ms"], float)


@sqlite_only
async def test_an_invalid_traceparent_starts_a_new_trace(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, str(tmp_path / "b"), otel_sampling_ratio=1.0)
    app = app_for(settings)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        await _invalid_traceparent_starts_a_new_trace(app, client, world)


async def _invalid_traceparent_starts_a_new_trace(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    exporter = InMemorySpanExporter()
    app.state.services.observe.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    bad = "00-00000000000000000000000000000000-b7ad6b7169203331-01"
    headers = {**world.bob.headers, "traceparent": bad}
    response = await client.get("/v1/recognitions", headers=headers)
    assert response.status_code == 200
    [server] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert server.parent is None
    assert server.context.trace_id != 0
    assert response.headers["traceparent"].split("-")[1] == format(server.context.trace_id, "032x")


@sqlite_only
async def test_probes_are_not_traced_and_log_below_info(
    app: FastAPI, client: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    exporter = InMemorySpanExporter()
    app.state.services.observe.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    await client.get("/live", headers={"traceparent": INCOMING})
    for path in ("/live", "/ready", "/health", "/metrics"):
        assert (await client.get(path)).status_code == 200
    assert not [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert not [r for r in records(log_lines) if r.get("event") == "http_request"]


@sqlite_only
async def test_access_lines_hash_people_and_never_carry_secrets(
    client: httpx.AsyncClient, world: World, log_lines: io.StringIO
) -> None:
    recognition_id = await _recognition(client, world)
    await client.get(f"/v1/recognitions/{recognition_id}", headers=world.bob.headers)
    output = written(log_lines)
    access = [r for r in records(log_lines) if r.get("event") == "http_request"]
    assert len(access) == 2
    for line in access:
        assert isinstance(line["user"], str)
        assert len(line["user"]) == 16
        assert isinstance(line["org"], str)
        assert line["request_id"]
    assert access[0]["user"] != access[1]["user"]  # alice, then bob
    assert access[0]["org"] == access[1]["org"]
    for secret in (world.alice.token, world.bob.token, world.alice.id, "alice@a.test", "observed"):
        assert secret not in output
    assert "127.0.0.1" not in output


@sqlite_only
async def test_an_unsampled_request_still_has_trace_ids_in_its_log_line(
    app: FastAPI, client: httpx.AsyncClient, world: World, log_lines: io.StringIO
) -> None:
    exporter = InMemorySpanExporter()
    app.state.services.observe.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    unsampled = f"00-{TRACE_ID}-b7ad6b7169203331-00"
    response = await client.get(
        "/v1/recognitions", headers={**world.bob.headers, "traceparent": unsampled}
    )
    assert response.status_code == 200
    assert response.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert response.headers["traceparent"].endswith("-00")
    [access] = [r for r in records(log_lines) if r.get("event") == "http_request"]
    assert access["trace_id"] == TRACE_ID
    assert exporter.get_finished_spans() == ()  # neither the server span nor SQL spans


async def test_outgoing_httpx_calls_carry_the_trace_on() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as outgoing:
        instrument_httpx_client(outgoing, provider)
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("job") as parent:
            await outgoing.post("http://hooks.invalid/deliver")
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert seen[0].headers["traceparent"].split("-")[1] == trace_id
    [client_span] = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert client_span.parent is not None
    assert client_span.parent.span_id == parent.get_span_context().span_id


async def test_redis_commands_become_child_spans() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = redis.Redis.from_url(redis_url(6))
    try:
        instrument_redis_client(client, provider)
        with provider.get_tracer("test").start_as_current_span("work") as parent:
            assert await client.ping()
    finally:
        await client.aclose()
    spans = [s for s in exporter.get_finished_spans() if s.name != "work"]
    assert spans, "no Redis span"
    assert all(s.parent is not None for s in spans)
    assert {s.parent.span_id for s in spans if s.parent} == {parent.get_span_context().span_id}


async def test_requests_still_work_with_the_stack_off(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, str(tmp_path / "b"), observe_enabled=False)
    app = app_for(settings)
    async with running(app) as client:
        world = await seed_world(app.state.services.database)
        recognition_id = await _recognition(client, world)
        response = await client.get(f"/v1/recognitions/{recognition_id}", headers=world.bob.headers)
        assert response.status_code == 200
        assert "x-request-id" not in response.headers
        assert (await client.get("/ready")).status_code == 200


async def test_an_unreachable_database_fails_its_check_within_the_timeout() -> None:
    unreachable = Database("postgresql+asyncpg://postgres@127.0.0.1:1/keel", timeout=0.5)
    try:
        health = HealthRegistry(clock=ManualClock(), cache_seconds=2.0, default_timeout=1.0)
        health.register(checks.database_check(unreachable))
        report = await health.readiness()
    finally:
        await unreachable.dispose()
    assert report.status is Status.FAIL
    [entry] = report.checks_json()["database:responseTime"]
    assert entry["status"] == "fail"
    assert entry["output"]
    assert "127.0.0.1" not in entry["output"]
