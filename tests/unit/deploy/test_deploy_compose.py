"""compose.yaml: valid against the Compose Specification's JSON schema, and the scale-out shape
it promises — migrations first, two API replicas behind HAProxy, a worker, Prometheus scraping
every Keel process — with HAProxy's configuration checked by HAProxy itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from typing import Any

import jsonschema
import pytest
import yaml
from tests.support.deployment import (
    DEPLOY,
    ROOT,
    need_tool,
    parse_keel_command,
    unknown_settings,
)

KEEL_SERVICES = ("audit-key", "migrate", "api", "worker")


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's schema (github.com/compose-spec/compose-spec,
    schema/compose-spec.json), as check-jsonschema vendors it for its check-compose-spec hook."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(document)
    ]


def test_compose_file_is_valid_against_the_compose_specification(compose) -> None:
    assert errors(compose) == []


def test_the_schema_check_rejects_what_compose_would(compose) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["worker"]["restart_policy"] = "always"
    found = errors(broken)
    assert any("condition" in error or "service_finished" in error for error in found), found
    assert any("restart_policy" in error for error in found), found


def test_migrations_complete_before_any_api_or_worker_starts(compose) -> None:
    services = compose["services"]
    assert parse_keel_command(services["migrate"]["command"]) == {
        "as_json": False,
        "target": "heads",
        "no_backup": False,
    }
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        dependency = services[name]["depends_on"]["migrate"]
        assert dependency["condition"] == "service_completed_successfully", name


def test_two_api_replicas_and_a_worker_on_postgres_redis_and_seaweedfs(compose) -> None:
    services = compose["services"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert parse_keel_command(services["api"]["command"])["host"] == "0.0.0.0"
    parse_keel_command(services["worker"]["command"])
    environment = services["api"]["environment"]
    assert environment["KEEL_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in environment["KEEL_DATABASE_URL"]
    assert environment["KEEL_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["KEEL_STORAGE_URL"].startswith("s3://")
    assert environment["KEEL_STORAGE_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert "-s3" in services["seaweedfs"]["command"]
    assert environment["KEEL_INPROCESS_WORKER"] == "off"  # the worker service runs the jobs
    assert environment["KEEL_LIMITER_INSTANCES"] == str(services["api"]["deploy"]["replicas"])


def test_keel_containers_run_on_a_read_only_root_with_a_writable_tmp(compose) -> None:
    for name in KEEL_SERVICES:
        service = compose["services"][name]
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name


def test_every_keel_setting_the_containers_get_exists(compose) -> None:
    for name in KEEL_SERVICES:
        assert not unknown_settings(compose["services"][name]["environment"]), name


def test_stop_grace_covers_keel_drain_and_grace(compose) -> None:
    from keel.settings import Settings  # noqa: PLC0415

    settings = Settings()
    needed = (
        settings.shutdown_drain_seconds
        + settings.serve_listener_settle_seconds
        + 2.0  # the settle may wait up to 2 s more while the queue keeps filling
        + settings.shutdown_grace_seconds
    )
    for name in ("api", "worker"):
        assert float(compose["services"][name]["stop_grace_period"].removesuffix("s")) > needed


def test_prometheus_scrapes_every_keel_process_on_the_ports_they_serve(compose) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["keel-api"]["dns_sd_configs"][0]
    worker = jobs["keel-worker"]["dns_sd_configs"][0]
    assert api["names"] == ["api"]
    assert api["port"] == 8000 == parse_keel_command(compose["services"]["api"]["command"])["port"]
    assert worker["names"] == ["worker"]
    worker_command = compose["services"]["worker"]["command"]
    assert worker["port"] == int(worker_command[worker_command.index("--http-port") + 1])
    assert (
        str(worker["port"]) == compose["services"]["worker"]["environment"]["KEEL_WORKER_HTTP_PORT"]
    )
    assert {"haproxy", "seaweedfs"} <= set(jobs)
    mounted = compose["services"]["prometheus"]["volumes"][0]
    assert mounted.startswith("./deploy/prometheus/prometheus.yml:")


def test_haproxy_balances_the_api_replicas_on_ready() -> None:
    config = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert "server-template api " in config
    assert "api:8000" in config
    assert "http-check send meth GET uri /ready" in config
    assert "bind :8000" in config


def test_haproxy_accepts_its_configuration() -> None:
    haproxy = need_tool("haproxy (Debian package, installed by .ci/run)", shutil.which("haproxy"))
    completed = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
