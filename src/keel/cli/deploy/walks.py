"""``keel deploy canary|switch|proxy|manifests``: walking traffic between two versions that
already run (behind an HAProxy this machine controls), and the same analysis as Kubernetes
manifests for Argo Rollouts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
import typer

from keel.cli._common import JsonOption, database, fail, out, run
from keel.cli.deploy._shared import (
    IntervalOption,
    LatencyAlphaOption,
    MaxErrorRateOption,
    MaxP99Option,
    MinEffectOption,
    MinRequestsOption,
    StepsOption,
    StepTimeoutOption,
    SyntheticPathOption,
    _plan,
    _report,
    _store,
    app,
)
from keel.deploy import (
    Deployment,
    DeploymentState,
    DeploymentStore,
    current_release,
)
from keel.deploy.bluegreen import BlueGreenSwitch, HttpReadiness, SwitchPlan
from keel.deploy.haproxy import HAProxy, RuntimeApi, Server, haproxy_binary
from keel.deploy.manifests import BASE, DEFAULT_PROMETHEUS, ManifestOptions
from keel.deploy.manifests import render as render_manifests
from keel.deploy.manifests import write as write_manifests
from keel.deploy.prometheus_source import version_metrics
from keel.deploy.rollout import (
    CanaryRollout,
    HAProxyRouter,
    HttpSyntheticTraffic,
)
from keel.errors import KeelError
from keel.observe.metrics import duration_buckets
from keel.settings import Settings


@app.command("canary")
def canary(
    deployment_id: str,
    admin_socket: Path = typer.Option(..., "--haproxy-socket", help="HAProxy's admin socket."),
    canary_metrics: str = typer.Option(..., "--canary-metrics", help="The canary's /metrics URL."),
    baseline_metrics: str = typer.Option(
        ..., "--baseline-metrics", help="The baseline's /metrics URL."
    ),
    canary_server: str = typer.Option("canary", help="The canary's HAProxy server name."),
    baseline_server: str = typer.Option("baseline", help="The baseline's HAProxy server name."),
    steps: str = StepsOption,
    interval: float = IntervalOption,
    step_timeout: float = StepTimeoutOption,
    min_requests: int = MinRequestsOption,
    max_error_rate: float = MaxErrorRateOption,
    max_p99: float | None = MaxP99Option,
    synthetic_path: str | None = SyntheticPathOption,
    latency_alpha: float = LatencyAlphaOption,
    min_effect: float = MinEffectOption,
    as_json: bool = JsonOption,
) -> None:
    """Walk a rolling deployment's canary steps behind HAProxy; roll back on a failed analysis."""
    settings = Settings()
    plan = _plan(
        steps,
        interval,
        step_timeout,
        min_requests=min_requests,
        max_error_rate=max_error_rate,
        max_p99=max_p99,
        latency_alpha=latency_alpha,
        min_effect=min_effect,
    )
    router = HAProxyRouter(RuntimeApi(admin_socket), baseline=baseline_server, canary=canary_server)
    synthetic = None
    if synthetic_path is not None:
        synthetic = HttpSyntheticTraffic(
            str(httpx.URL(canary_metrics).copy_with(path=synthetic_path, query=None)),
            str(httpx.URL(baseline_metrics).copy_with(path=synthetic_path, query=None)),
        )

    _walk(
        settings,
        lambda store: CanaryRollout(
            store,
            deployment_id,
            router,
            canary=version_metrics(settings.deploy_prometheus_url, canary_metrics),
            baseline=version_metrics(settings.deploy_prometheus_url, baseline_metrics),
            plan=plan,
            synthetic=synthetic,
        ),
        as_json,
    )


@app.command("manifests")
def manifests(
    output: Path = typer.Option(..., "--output", help="Directory to write the manifests into."),
    image: str = typer.Option(..., "--image", help="The release's image, e.g. REGISTRY/keel:TAG."),
    environment: str = typer.Option(..., "--env", help="The environment (namespace keel-ENV)."),
    replicas: int = typer.Option(2, "--replicas", min=1, help="The autoscaler's minimum."),
    max_replicas: int | None = typer.Option(
        None, "--max-replicas", min=1, help="The autoscaler's maximum (default 3 x --replicas)."
    ),
    steps: str = StepsOption,
    interval: float = IntervalOption,
    step_timeout: float = StepTimeoutOption,
    min_requests: int = MinRequestsOption,
    max_error_rate: float = MaxErrorRateOption,
    max_p99: float | None = MaxP99Option,
    latency_alpha: float = LatencyAlphaOption,
    min_effect: float = MinEffectOption,
    prometheus_url: str | None = typer.Option(
        None,
        "--prometheus-url",
        help="Prometheus for the analysis (default: KEEL_DEPLOY_PROMETHEUS_URL, else in-cluster).",
    ),
    base: Path | None = typer.Option(
        None, "--base", help="The kustomize base to generate from (default: the checkout's)."
    ),
) -> None:
    """Write Kubernetes manifests for this release: workload, autoscaler, Argo canary."""
    settings = Settings()
    plan = _plan(
        steps,
        interval,
        step_timeout,
        min_requests=min_requests,
        max_error_rate=max_error_rate,
        max_p99=max_p99,
        latency_alpha=latency_alpha,
        min_effect=min_effect,
    )
    try:
        options = ManifestOptions(
            image=image,
            environment=environment,
            version=current_release(settings).version,
            buckets=duration_buckets(settings.slo_latency_seconds),
            replicas=replicas,
            max_replicas=max_replicas,
            plan=plan,
            prometheus_url=prometheus_url or settings.deploy_prometheus_url or DEFAULT_PROMETHEUS,
        )
        written = write_manifests(render_manifests(options, base or BASE), output)
    except (ValueError, OSError, KeelError) as error:
        fail(str(error))
    for path in written:
        out.print(str(path), highlight=False)


@app.command("switch")
def switch(
    deployment_id: str,
    admin_socket: Path = typer.Option(..., "--haproxy-socket", help="HAProxy's admin socket."),
    ready_url: str = typer.Option(..., "--ready-url", help="The new version's /ready URL."),
    canary_server: str = typer.Option("canary", help="The new version's HAProxy server name."),
    baseline_server: str = typer.Option("baseline", help="The old version's HAProxy server name."),
    ready_timeout: float = typer.Option(60.0, "--ready-timeout", min=0.1, help="Seconds."),
    warm: float = typer.Option(
        300.0, "--warm", min=0.0, help="Seconds the old version stays warm for a rollback."
    ),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between polls."),
    as_json: bool = JsonOption,
) -> None:
    """Blue-green: once the new version is ready, give it all traffic in one switch."""
    settings = Settings()
    router = HAProxyRouter(RuntimeApi(admin_socket), baseline=baseline_server, canary=canary_server)
    plan = SwitchPlan(
        interval_seconds=interval, ready_timeout_seconds=ready_timeout, warm_seconds=warm
    )

    _walk(
        settings,
        lambda store: BlueGreenSwitch(
            store, deployment_id, router, probe=HttpReadiness(ready_url), plan=plan
        ),
        as_json,
    )


class _Walk(Protocol):
    async def run(self) -> Deployment: ...


def _walk(settings: Settings, make: Callable[[DeploymentStore], _Walk], as_json: bool) -> None:
    """Run a canary or blue-green walk; exit 1 unless it ended promoted."""

    async def go() -> Deployment:
        async with database(settings) as db:
            return await make(_store(db, settings)).run()

    deployment = run(go)
    _report(deployment, as_json)
    if deployment.state is not DeploymentState.PROMOTED:
        raise typer.Exit(1)


@app.command("proxy")
def proxy(
    port: int = typer.Option(..., "--port", help="Where clients connect."),
    baseline: str = typer.Option(..., "--baseline", help="HOST:PORT of the running version."),
    canary_address: str = typer.Option(..., "--canary", help="HOST:PORT of the new version."),
    workdir: Path = typer.Option(..., "--workdir", help="Configuration and admin socket here."),
    host: str = typer.Option("127.0.0.1", "--host"),
    health_path: str | None = typer.Option("/ready", "--health-path", help="Empty: no checks."),
) -> None:
    """Run HAProxy in the foreground: 100 % baseline, 0 % canary, admin socket in --workdir."""
    servers = [
        Server("baseline", *_address(baseline), weight=100),
        Server("canary", *_address(canary_address), weight=0),
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    frontend = HAProxy(
        servers, workdir=workdir, bind_port=port, bind_host=host, health_path=health_path or None
    )
    frontend.config_path.write_text(frontend.config, encoding="utf-8")
    out.print(f"admin socket: {frontend.admin_socket}", highlight=False)
    binary = haproxy_binary()
    os.execv(binary, [binary, "-db", "-f", str(frontend.config_path)])  # noqa: S606 - our binary


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"{text!r} is not HOST:PORT")
    return host, int(port)
