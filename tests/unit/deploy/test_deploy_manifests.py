"""``keel deploy manifests``: the base's API objects for one release plus an Argo Rollouts canary,
every object valid against its schema, and an AnalysisTemplate that is the local canary
analysis — same queries builder, same thresholds, same minimum sample."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.deployment import KUBERNETES
from tests.support.kubernetes_manifests import validation_problems
from typer.testing import CliRunner

from keel.cli import app
from keel.deploy.canary import Thresholds
from keel.deploy.manifests import (
    BASE,
    FILE_NAMES,
    HASH_LABEL,
    ManifestOptions,
    analysis_queries,
    load_base,
    render,
)
from keel.deploy.rollout import CanaryPlan
from keel.observe.metrics import duration_buckets
from keel.settings import Settings

THRESHOLDS = Thresholds(min_requests=250, max_error_rate=0.02, max_p99_seconds=0.5)
OPTIONS = ManifestOptions(
    image="registry.example.com/keel:2.0.0",
    environment="prod",
    version="2.0.0",
    buckets=duration_buckets(Settings().slo_latency_seconds),
    replicas=3,
    plan=CanaryPlan(steps=(10, 50, 100), interval_seconds=20, thresholds=THRESHOLDS),
)


def _objects(options: ManifestOptions = OPTIONS) -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in render(options)}


def test_the_base_the_manifests_come_from_is_the_checkouts() -> None:
    assert BASE == KUBERNETES / "base"


def test_every_manifest_is_valid_against_its_schema() -> None:
    objects = _objects()
    assert list(objects) == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Rollout",
        "AnalysisTemplate",
    ]
    for kind, document in objects.items():
        assert validation_problems(document) == [], kind
        assert document["metadata"]["namespace"] == "keel-prod"
        assert document["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("Rollout", ("spec", "strategy", "canary"), {"stepz": []}),
        ("Rollout", ("spec", "strategy", "canary", "steps", 0), {"pause": {}}),  # two actions
        ("AnalysisTemplate", ("spec", "metrics", 0), {"failureLimitt": 1}),
        ("AnalysisTemplate", ("spec", "metrics", 0, "provider", "prometheus"), {"query": 3}),
    ],
)
def test_the_argo_schema_check_rejects_unknown_fields_and_wrong_types(
    kind: str, path: tuple[str | int, ...], bad: dict[str, object]
) -> None:
    document = copy.deepcopy(_objects()[kind])
    target: Any = document
    for key in path:
        target = target[key]
    target.update(bad)
    assert validation_problems(document) != []


def _without_release(document: dict[str, Any]) -> dict[str, Any]:
    plain = copy.deepcopy(document)
    plain["metadata"].pop("namespace")
    plain["metadata"]["labels"].pop("app.kubernetes.io/version")
    return plain


def test_the_workload_objects_are_the_bases_with_the_releases_image_and_sizes() -> None:
    objects = _objects()
    base = {document["kind"]: document for document in load_base()}
    deployment = _without_release(objects["Deployment"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container.pop("image") == OPTIONS.image
    (base_container,) = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    base_container.pop("image")
    assert deployment == base["Deployment"]
    assert _without_release(objects["Service"]) == base["Service"]
    assert _without_release(objects["PodDisruptionBudget"]) == base["PodDisruptionBudget"]


def test_the_pods_are_probed_drained_and_given_their_grace() -> None:
    pod = _objects()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/live"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(
        container["lifecycle"]["preStop"]["exec"]["command"][1]
    )


def test_the_budget_service_and_rollout_select_the_deployments_pods() -> None:
    objects = _objects()
    pods = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "Rollout"):
        spec = objects[kind]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= pods.items(), kind
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_the_autoscaler_scales_the_rollout_on_cpu_and_requests_in_flight() -> None:
    objects = _objects()
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": "keel-api",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 9)
    metrics = {
        metric["resource"]["name"]
        if metric["type"] == "Resource"
        else metric["pods"]["metric"]["name"]
        for metric in hpa["metrics"]
    }
    assert metrics == {"cpu", "http_server_active_requests"}
    rollout = objects["Rollout"]["spec"]
    assert rollout["workloadRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert "template" not in rollout  # the Deployment's pods, not a second copy


def test_the_rollout_walks_the_plans_steps_with_an_analysis_after_each_but_the_last() -> None:
    steps = _objects()["Rollout"]["spec"]["strategy"]["canary"]["steps"]
    assert [step.get("setWeight") for step in steps] == [10, None, 50, None]
    for step in steps[1::2]:
        assert step["analysis"]["templates"] == [{"templateName": "keel-canary"}]
        assert {arg["name"]: arg["valueFrom"] for arg in step["analysis"]["args"]} == {
            "canary-hash": {"podTemplateHashValue": "Latest"},
            "baseline-hash": {"podTemplateHashValue": "Stable"},
        }


def _limit(condition: str) -> float:
    found = re.fullmatch(r"len\(result\) > 0 && result\[0\] (<=|>|>=) (\S+)", condition)
    assert found, condition
    return float(found.group(2))


def test_the_analysis_template_is_the_local_analysis() -> None:
    template = _objects()["AnalysisTemplate"]["spec"]
    queries = analysis_queries(OPTIONS)
    metrics = {metric["name"]: metric for metric in template["metrics"]}
    expected = {
        "error-rate": THRESHOLDS.max_error_rate,
        "error-rate-increase": THRESHOLDS.max_error_rate_increase,
        "latency-slower": 0.5 + THRESHOLDS.min_effect,
        "latency-p99": THRESHOLDS.max_p99_seconds,
    }
    assert set(metrics) == {"samples", *expected}
    for name, limit in expected.items():
        metric = metrics[name]
        assert metric["provider"]["prometheus"]["query"] == queries.verdict_queries()[name][0]
        assert _limit(metric["successCondition"]) == _limit(metric["failureCondition"]) == limit
        assert metric["failureLimit"] == 0  # one failed analysis rolls back
        assert f">= {THRESHOLDS.min_requests})" in metric["provider"]["prometheus"]["query"]
    samples = metrics["samples"]
    assert samples["provider"]["prometheus"]["query"] == queries.least_requests
    assert _limit(samples["successCondition"]) == THRESHOLDS.min_requests
    # Short of samples for the whole step timeout (300 s at 20 s): abort, never promote.
    assert (samples["count"], samples["failureLimit"]) == (15, 14)
    assert {metric["interval"] for metric in metrics.values()} == {"20s"}


def test_the_queries_pick_each_version_by_the_hash_the_service_monitor_copies() -> None:
    monitor = yaml.safe_load((BASE / "api-servicemonitor.yaml").read_text())
    assert [label.replace("-", "_") for label in monitor["spec"]["podTargetLabels"]] == [HASH_LABEL]
    queries = analysis_queries(OPTIONS)
    assert queries.canary == {"namespace": "keel-prod", HASH_LABEL: "{{args.canary-hash}}"}
    assert queries.baseline == {"namespace": "keel-prod", HASH_LABEL: "{{args.baseline-hash}}"}


def test_keel_deploy_manifests_writes_the_files(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["deploy", "manifests", "--output", str(tmp_path / "out"), "--image", "reg/keel:1"]
    result = runner.invoke(app, [*args, "--env", "staging", "--steps", "20,100"])
    assert result.exit_code == 0, result.output
    written = {path.name: yaml.safe_load(path.read_text()) for path in (tmp_path / "out").iterdir()}
    assert set(written) == set(FILE_NAMES)
    assert all(validation_problems(document) == [] for document in written.values())
    assert written["api-rollout.yaml"]["metadata"]["namespace"] == "keel-staging"
    steps = written["api-rollout.yaml"]["spec"]["strategy"]["canary"]["steps"]
    assert [step.get("setWeight") for step in steps] == [20, None]

    bad_env = runner.invoke(app, [*args, "--env", "Prod!"])
    assert bad_env.exit_code == 1
    assert "not an environment name" in bad_env.output
    bad_steps = runner.invoke(app, [*args, "--env", "prod", "--steps", "50,20"])
    assert bad_steps.exit_code == 1
    assert "increasing" in bad_steps.output
