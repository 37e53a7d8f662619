"""Kubernetes manifests for one release: the API workload, and an Argo Rollouts canary whose
analysis is the local one.

Generated *from* ``deploy/kubernetes/base`` rather than beside it: the
Deployment (probes on ``/live`` and ``/ready``, startup probe, preStop drain,
termination grace), Service, PodDisruptionBudget and HorizontalPodAutoscaler
(CPU and requests in flight) are the base's own objects, given the release's
image, namespace, version label and replica bounds — so there is one
definition of how Keel runs on Kubernetes, reviewed and tested once.

The canary adds two objects:

* a ``Rollout`` that takes over the Deployment's pods by reference
  (``workloadRef``, scaling the Deployment down as it scales up) instead of a
  second copy of the pod template, and walks the same steps as ``keel deploy
  canary`` with an analysis after each but the last; the HPA scales the Rollout;
* an ``AnalysisTemplate`` whose Prometheus queries come from
  :class:`~keel.deploy.prometheus_source.CanaryQueries` with the same
  :class:`~keel.deploy.canary.Thresholds` and plan, so the two cannot drift.
  Versions are told apart by the pod-template hash Argo puts on each pod
  (``rollouts_pod_template_hash``, copied to the series by the base's
  ServiceMonitor). As locally, too little traffic is never a pass: a verdict
  metric without both minimum samples is *inconclusive*; the ``samples``
  metric fails — and Argo aborts, back to the stable version — only once every
  measurement of the step timeout came up short.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keel.deploy.approvals import check_environment
from keel.deploy.canary import Thresholds
from keel.deploy.prometheus_source import CanaryQueries
from keel.deploy.rollout import CanaryPlan

BASE = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "base"
"""The checkout's kustomize base (``--base`` points elsewhere)."""

# The base's files for the API workload, in the order they are written.
BASE_FILES = ("api-deployment.yaml", "api-service.yaml", "api-pdb.yaml", "api-hpa.yaml")
FILE_NAMES = (*BASE_FILES, "api-rollout.yaml", "api-analysistemplate.yaml")
NAME = "keel-api"
TEMPLATE_NAME = "keel-canary"
HASH_LABEL = "rollouts_pod_template_hash"  # rollouts-pod-template-hash, as a series label
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
MIN_WINDOW_SECONDS = 60  # four scrapes of the base's ServiceMonitor (15 s): increase() needs two


@dataclass(frozen=True, slots=True)
class ManifestOptions:
    image: str
    environment: str
    version: str
    buckets: tuple[float, ...]  # the request histogram's edges (keel.observe.metrics)
    replicas: int = 2  # the HPA's minimum; the Rollout's count is the HPA's
    max_replicas: int | None = None  # default: three times ``replicas``
    plan: CanaryPlan = field(default_factory=CanaryPlan)
    prometheus_url: str = DEFAULT_PROMETHEUS

    @property
    def namespace(self) -> str:
        return f"keel-{check_environment(self.environment)}"


def load_base(base: Path = BASE) -> list[dict[str, Any]]:
    """The base's API objects, as written there."""
    documents = []
    for name in BASE_FILES:
        path = base / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: --base must be deploy/kubernetes/base")
        documents.append(yaml.safe_load(path.read_text(encoding="utf-8")))
    return documents


def analysis_queries(options: ManifestOptions) -> CanaryQueries:
    """The analysis' PromQL over each version's pods, as the AnalysisTemplate runs it."""
    window = max(MIN_WINDOW_SECONDS, math.ceil(options.plan.interval_seconds))
    return CanaryQueries(
        canary={"namespace": options.namespace, HASH_LABEL: "{{args.canary-hash}}"},
        baseline={"namespace": options.namespace, HASH_LABEL: "{{args.baseline-hash}}"},
        thresholds=options.plan.thresholds,
        buckets=options.buckets,
        window=f"{window}s",
    )


def render(options: ManifestOptions, base: Path = BASE) -> list[dict[str, Any]]:
    """Deployment, Service, PodDisruptionBudget, HPA, Rollout and AnalysisTemplate."""
    documents = [copy.deepcopy(document) for document in load_base(base)]
    by_kind = {document["kind"]: document for document in documents}
    for document in documents:
        metadata = document["metadata"]
        metadata["namespace"] = options.namespace
        metadata.setdefault("labels", {})["app.kubernetes.io/version"] = options.version
    deployment = by_kind["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = options.image
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    hpa["minReplicas"] = options.replicas
    hpa["maxReplicas"] = options.max_replicas or 3 * options.replicas
    if hpa["maxReplicas"] < hpa["minReplicas"]:
        raise ValueError("max replicas must be at least replicas")
    hpa["scaleTargetRef"] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": NAME}
    labels = dict(deployment["metadata"]["labels"])
    return [*documents, _rollout(options, deployment, labels), _template(options, labels)]


def _metadata(options: ManifestOptions, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": options.namespace, "labels": labels}


def _rollout(
    options: ManifestOptions, deployment: dict[str, Any], labels: dict[str, str]
) -> dict[str, Any]:
    analysis = {
        "templates": [{"templateName": TEMPLATE_NAME}],
        "args": [
            {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            {"name": "baseline-hash", "valueFrom": {"podTemplateHashValue": "Stable"}},
        ],
    }
    steps: list[dict[str, Any]] = []
    for percent in options.plan.steps:
        if percent == 100:
            break  # as locally: nothing left to compare with; the end of the steps promotes
        steps += [{"setWeight": percent}, {"analysis": analysis}]
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": _metadata(options, NAME, labels),
        "spec": {
            "selector": copy.deepcopy(deployment["spec"]["selector"]),
            "workloadRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment["metadata"]["name"],
                "scaleDown": "progressively",
            },
            "revisionHistoryLimit": deployment["spec"]["revisionHistoryLimit"],
            "strategy": {
                "canary": {
                    "maxSurge": strategy["maxSurge"],
                    "maxUnavailable": strategy["maxUnavailable"],
                    "steps": steps,
                }
            },
        },
    }


def _template(options: ManifestOptions, labels: dict[str, str]) -> dict[str, Any]:
    plan = options.plan
    queries = analysis_queries(options)
    count = max(1, math.ceil(plan.step_timeout_seconds / plan.interval_seconds))
    interval = f"{math.ceil(plan.interval_seconds)}s"
    provider = {"address": options.prometheus_url}
    metrics: list[dict[str, Any]] = [
        {
            # Short of the minimum sample at every measurement of the step timeout: fail.
            "name": "samples",
            "interval": interval,
            "count": count,
            "failureLimit": count - 1,
            "successCondition": _at_least(plan.thresholds),
            "provider": {"prometheus": {**provider, "query": queries.least_requests}},
        }
    ]
    for name, (query, limit) in queries.verdict_queries().items():
        metrics.append(
            {
                "name": name,
                "interval": interval,
                "count": count,
                "failureLimit": 0,  # one failed analysis rolls back, as locally
                "inconclusiveLimit": count,  # no data: the samples metric decides
                "successCondition": f"len(result) > 0 && result[0] <= {limit!r}",
                "failureCondition": f"len(result) > 0 && result[0] > {limit!r}",
                "provider": {"prometheus": {**provider, "query": query}},
            }
        )
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": _metadata(options, TEMPLATE_NAME, labels),
        "spec": {"args": [{"name": "canary-hash"}, {"name": "baseline-hash"}], "metrics": metrics},
    }


def _at_least(thresholds: Thresholds) -> str:
    return f"len(result) > 0 && result[0] >= {thresholds.min_requests}"


class _Plain(yaml.SafeDumper):
    """Every object written out in full: no YAML anchors where two places share a value."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def write(documents: list[dict[str, Any]], output: Path) -> list[Path]:
    """One file per object in ``output`` (created); returns the paths written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in zip(FILE_NAMES, documents, strict=True):
        path = output / name
        text = yaml.dump(document, Dumper=_Plain, sort_keys=False, width=1000)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
