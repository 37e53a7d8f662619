"""deploy/kubernetes: each overlay rendered by kustomize (``kubectl kustomize``), every object
valid against its schema, the parity contract between staging and production, and the facts
the manifests must share with Keel itself — its settings, its CLI, its probe paths, its drain
timings and the names of the metrics the autoscalers read."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.support.deployment import (
    OVERLAYS,
    parse_keel_command,
    render_overlay,
    setting_names,
    unknown_settings,
)
from tests.support.kubernetes_manifests import parity_violations, validation_problems

from keel.jobs.metrics import OLDEST_READY_AGE_NAME, QUEUE_DEPTH_NAME
from keel.jobs.states import JobState
from keel.observe.metrics import Metrics
from keel.settings import Settings

NAMESPACES = {"staging": "keel-staging", "prod": "keel-prod"}
SETTLE_EXTRA_SECONDS = 2.0  # keel.serve.listener waits at most this past the settle time
WORKLOADS = ("Deployment/keel-api", "Deployment/keel-worker", "Job/keel-migrate")


def objects(overlay: str) -> dict[str, dict[str, Any]]:
    return {
        f"{document['kind']}/{document['metadata']['name']}": document
        for document in render_overlay(overlay)
    }


def by_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [document for document in render_overlay(overlay) if document["kind"] == kind]


def config(overlay: str) -> dict[str, str]:
    (config_map,) = by_kind(overlay, "ConfigMap")
    assert config_map["metadata"]["name"].startswith("keel-config-")  # hashed: rollouts on change
    return dict(config_map["data"])


def pod(overlay: str, workload: str) -> dict[str, Any]:
    return dict(objects(overlay)[workload]["spec"]["template"]["spec"])


def container(overlay: str, workload: str) -> dict[str, Any]:
    (only,) = pod(overlay, workload)["containers"]
    return dict(only)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_kind_keel_needs(overlay: str) -> None:
    assert set(objects(overlay)) == {
        "ServiceAccount/keel",
        *(
            f"ConfigMap/{name}"
            for name in [
                config_map["metadata"]["name"] for config_map in by_kind(overlay, "ConfigMap")
            ]
        ),
        "PersistentVolumeClaim/keel-migration-backups",
        "Job/keel-migrate",
        "Deployment/keel-api",
        "Service/keel-api",
        "Ingress/keel-api",
        "PodDisruptionBudget/keel-api",
        "HorizontalPodAutoscaler/keel-api",
        "ServiceMonitor/keel-api",
        "Deployment/keel-worker",
        "PodDisruptionBudget/keel-worker",
        "ScaledObject/keel-worker",
        "PodMonitor/keel-worker",
        "NetworkPolicy/keel-default-deny",
        "NetworkPolicy/keel-api-ingress",
        "NetworkPolicy/keel-worker-ingress",
        "NetworkPolicy/keel-egress",
    }
    for document in render_overlay(overlay):
        assert document["metadata"].get("namespace") == NAMESPACES[overlay], document["kind"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_its_schema(overlay: str) -> None:
    problems = {
        f"{document['kind']}/{document['metadata']['name']}": validation_problems(document)
        for document in render_overlay(overlay)
    }
    assert {name: found for name, found in problems.items() if found} == {}


def test_schema_validation_rejects_unknown_fields_and_wrong_types() -> None:
    rendered = objects("prod")
    deployment = copy.deepcopy(rendered["Deployment/keel-api"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbes"] = {}
    assert validation_problems(deployment)
    scaled = copy.deepcopy(rendered["ScaledObject/keel-worker"])
    scaled["spec"]["minReplicas"] = 1  # KEDA spells it minReplicaCount
    assert validation_problems(scaled)
    scaled = copy.deepcopy(rendered["ScaledObject/keel-worker"])
    scaled["spec"]["pollingInterval"] = "15"
    assert validation_problems(scaled)
    monitor = copy.deepcopy(rendered["ServiceMonitor/keel-api"])
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "15s"
    assert validation_problems(monitor)


def test_staging_and_prod_differ_only_where_the_parity_contract_allows() -> None:
    assert (
        parity_violations(
            render_overlay("staging"),
            NAMESPACES["staging"],
            render_overlay("prod"),
            NAMESPACES["prod"],
        )
        == []
    )


def test_the_parity_check_catches_a_difference_it_does_not_allow() -> None:
    staging = render_overlay("staging")
    changed = copy.deepcopy(render_overlay("prod"))
    for document in changed:
        if document["kind"] == "Deployment" and document["metadata"]["name"] == "keel-api":
            spec = document["spec"]["template"]["spec"]
            spec["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/live"
            spec["containers"][0]["resources"]["requests"]["cpu"] = "3"  # allowed
            spec["terminationGracePeriodSeconds"] = 10
    violations = parity_violations(
        staging, NAMESPACES["staging"], tuple(changed), NAMESPACES["prod"]
    )
    assert len(violations) == 2, violations
    assert any("readinessProbe.httpGet.path" in violation for violation in violations)
    assert any("terminationGracePeriodSeconds" in violation for violation in violations)


def test_the_overlays_do_differ_in_their_sizes_and_hostnames() -> None:
    staging, prod = objects("staging"), objects("prod")
    hpa = "HorizontalPodAutoscaler/keel-api"
    assert staging[hpa]["spec"]["maxReplicas"] < prod[hpa]["spec"]["maxReplicas"]
    hosts = {objects(o)["Ingress/keel-api"]["spec"]["rules"][0]["host"] for o in OVERLAYS}
    assert len(hosts) == 2
    assert config("staging")["KEEL_ENV"] == "staging"
    assert config("prod")["KEEL_ENV"] == "prod"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_is_made_of_real_settings_with_valid_values(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config(overlay)
    assert not unknown_settings(data)
    for name, value in data.items():
        if name in setting_names():
            monkeypatch.setenv(name, value)
    settings = Settings()  # raises on a value Keel would refuse
    assert settings.env.value == data["KEEL_ENV"]
    for workload in WORKLOADS:
        sources = container(overlay, workload)["envFrom"]
        assert {
            "configMapRef": {"name": by_kind(overlay, "ConfigMap")[0]["metadata"]["name"]}
        } in sources
        assert {"secretRef": {"name": "keel-secrets"}} in sources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_termination_grace_covers_prestop_drain_settle_and_grace(overlay: str) -> None:
    settings = Settings(
        shutdown_drain_seconds=float(config(overlay)["KEEL_SHUTDOWN_DRAIN_SECONDS"]),
        shutdown_grace_seconds=float(config(overlay)["KEEL_SHUTDOWN_GRACE_SECONDS"]),
    )
    api = container(overlay, "Deployment/keel-api")
    sleep, seconds = api["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"
    needed = (
        float(seconds)
        + settings.shutdown_drain_seconds
        + settings.serve_listener_settle_seconds
        + SETTLE_EXTRA_SECONDS
        + settings.shutdown_grace_seconds
    )
    assert pod(overlay, "Deployment/keel-api")["terminationGracePeriodSeconds"] > needed
    # the readiness probe sees the drain's 503 well before the drain ends
    readiness = api["readinessProbe"]
    assert (
        readiness["periodSeconds"] * readiness["failureThreshold"]
        <= float(seconds) + settings.shutdown_drain_seconds
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_termination_grace_covers_the_jobs_grace(overlay: str) -> None:
    grace = float(config(overlay)["KEEL_JOBS_GRACE_SECONDS"])
    assert pod(overlay, "Deployment/keel-worker")["terminationGracePeriodSeconds"] >= grace + 10


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_live_and_ready_on_the_ports_keel_listens_on(overlay: str) -> None:
    api = container(overlay, "Deployment/keel-api")
    port = parse_keel_command(api["args"])["port"]
    assert api["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    worker = container(overlay, "Deployment/keel-worker")
    worker_port = int(worker["args"][worker["args"].index("--http-port") + 1])
    parse_keel_command(worker["args"])
    assert worker["ports"] == [{"name": "metrics", "containerPort": worker_port, "protocol": "TCP"}]
    assert config(overlay)["KEEL_WORKER_HTTP_PORT"] == str(worker_port)
    for probed, port_name in ((api, "http"), (worker, "metrics")):
        assert probed["startupProbe"]["httpGet"] == {"path": "/live", "port": port_name}
        assert probed["livenessProbe"]["httpGet"] == {"path": "/live", "port": port_name}
        assert probed["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port_name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_on_a_read_only_root_with_writable_volumes(overlay: str) -> None:
    for workload in WORKLOADS:
        spec = pod(overlay, workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 1000
        assert spec["automountServiceAccountToken"] is False
        only = container(overlay, workload)
        assert only["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"requests", "limits"} <= set(only["resources"])
        mounts = {mount["mountPath"]: mount["name"] for mount in only["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        signing_key = config(overlay)["KEEL_AUDIT_SIGNING_KEY_PATH"]
        key_mount = mounts[signing_key.rsplit("/", 1)[0]]
        assert volumes[key_mount]["secret"]["secretName"] == "keel-audit-signing-key"
        # secret files are root-owned with group fsGroup: the key must be group-readable
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
        assert volumes[key_mount]["secret"]["defaultMode"] & 0o040


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_applies_migrations_before_the_workloads_roll(overlay: str) -> None:
    rendered = objects(overlay)
    job = rendered["Job/keel-migrate"]
    assert parse_keel_command(container(overlay, "Job/keel-migrate")["args"])["target"] == "heads"
    assert container(overlay, "Job/keel-migrate")["args"][:2] == ["migrate", "apply"]
    assert job["spec"]["backoffLimit"] == 0
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"

    def wave(document: dict[str, Any]) -> int:
        return int(
            document["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", 0)
        )

    assert wave(job) == -1
    for needed_first in ("ServiceAccount/keel", "PersistentVolumeClaim/keel-migration-backups"):
        assert wave(rendered[needed_first]) < wave(job)
    assert wave(by_kind(overlay, "ConfigMap")[0]) < wave(job)
    for workload in ("Deployment/keel-api", "Deployment/keel-worker"):
        assert wave(rendered[workload]) > wave(job)
        # a rollout never takes serving capacity away while new pods wait for the schema
        assert rendered[workload]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    mounts = {
        m["mountPath"]: m["name"] for m in container(overlay, "Job/keel-migrate")["volumeMounts"]
    }
    backups = mounts[config(overlay)["KEEL_MIGRATION_BACKUP_DIR"]]
    volumes = {volume["name"]: volume for volume in pod(overlay, "Job/keel-migrate")["volumes"]}
    assert volumes[backups]["persistentVolumeClaim"]["claimName"] == "keel-migration-backups"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_read_the_metrics_keel_exports(overlay: str) -> None:
    rendered = objects(overlay)
    families = {
        family.name
        for family in Metrics(
            slo_threshold=0.3, version="0", release_id="test", git_sha="0"
        ).registry.collect()
    }
    hpa = rendered["HorizontalPodAutoscaler/keel-api"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "keel-api",
    }
    assert "replicas" not in rendered["Deployment/keel-api"]["spec"]  # the HPA owns the count
    (pods_metric,) = [metric["pods"] for metric in hpa["metrics"] if metric["type"] == "Pods"]
    assert pods_metric["metric"]["name"] == "http_server_active_requests"
    assert pods_metric["metric"]["name"] in families
    assert [
        metric["resource"]["name"] for metric in hpa["metrics"] if metric["type"] == "Resource"
    ] == ["cpu"]

    scaled = rendered["ScaledObject/keel-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "keel-worker"
    assert "replicas" not in rendered["Deployment/keel-worker"]["spec"]  # KEDA owns the count
    depth, age = (trigger["metadata"]["query"] for trigger in scaled["triggers"])
    namespace = f'namespace="{NAMESPACES[overlay]}"'
    assert f"max by (queue) ({QUEUE_DEPTH_NAME}{{" in depth
    assert f'state="{JobState.READY.value}"' in depth
    assert namespace in depth
    assert age.startswith(f"max({OLDEST_READY_AGE_NAME}{{")
    assert namespace in age
    assert [trigger["type"] for trigger in scaled["triggers"]] == ["prometheus", "prometheus"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_monitors_budgets_and_policies_select_the_right_pods(overlay: str) -> None:
    rendered = objects(overlay)

    def labels(workload: str) -> dict[str, str]:
        return dict(rendered[workload]["spec"]["template"]["metadata"]["labels"])

    def selects(selector: dict[str, str], workload: str) -> bool:
        return selector.items() <= labels(workload).items()

    api, worker = "Deployment/keel-api", "Deployment/keel-worker"
    assert selects(rendered["Service/keel-api"]["spec"]["selector"], api)
    assert not selects(rendered["Service/keel-api"]["spec"]["selector"], worker)
    assert selects(rendered["PodDisruptionBudget/keel-api"]["spec"]["selector"]["matchLabels"], api)
    assert selects(
        rendered["PodDisruptionBudget/keel-worker"]["spec"]["selector"]["matchLabels"], worker
    )
    monitor = rendered["ServiceMonitor/keel-api"]["spec"]
    assert (
        monitor["selector"]["matchLabels"].items()
        <= rendered["Service/keel-api"]["metadata"]["labels"].items()
    )
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("http", "/metrics")]
    pod_monitor = rendered["PodMonitor/keel-worker"]["spec"]
    assert selects(pod_monitor["selector"]["matchLabels"], worker)
    assert [(e["port"], e["path"]) for e in pod_monitor["podMetricsEndpoints"]] == [
        ("metrics", "/metrics")
    ]
    deny = rendered["NetworkPolicy/keel-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    for workload in (api, worker, "Job/keel-migrate"):
        assert selects(deny["podSelector"]["matchLabels"], workload)
    api_ports = rendered["NetworkPolicy/keel-api-ingress"]["spec"]["ingress"][0]["ports"]
    assert api_ports == [{"port": "http", "protocol": "TCP"}]
    worker_ports = rendered["NetworkPolicy/keel-worker-ingress"]["spec"]["ingress"][0]["ports"]
    assert worker_ports == [{"port": "metrics", "protocol": "TCP"}]
