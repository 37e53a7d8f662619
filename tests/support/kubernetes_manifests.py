"""Checks of rendered Kubernetes manifests: schema validation (built-in kinds against the
Kubernetes OpenAPI schemas, the KEDA and Prometheus Operator kinds against models generated
from their published CRDs) and the parity contract between overlays."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, ServiceMonitor
from pydantic import BaseModel, ValidationError

from tests.support.argo_rollouts import AnalysisTemplate, Rollout

KUBERNETES_VERSION = "1.32.0"  # the oldest minor the upstream project still patches

# Custom resources, validated by the cloudcoil models generated from each project's CRD
# (KEDA's keda.sh_scaledobjects.yaml, the Prometheus Operator's monitoring.coreos.com CRDs),
# and Argo Rollouts' by closed models of its API reference (tests.support.argo_rollouts).
CUSTOM_RESOURCES: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): PodMonitor,
    ("argoproj.io/v1alpha1", "Rollout"): Rollout,
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): AnalysisTemplate,
}

# The parity contract: the only paths where two overlays' renderings may differ. Everything
# else — images, probes, commands, grace periods, settings, policies, metrics, queries — is
# the same in staging and production, so what staging proves holds for production.
ALLOWED_DIFFERENCES: dict[str, str] = {
    "namespace": r"[^:]+:metadata\.namespace",
    "replicas": (
        r"HorizontalPodAutoscaler/keel-api:spec\.(minReplicas|maxReplicas)"
        r"|ScaledObject/keel-worker:spec\.(minReplicaCount|maxReplicaCount)"
        # each API process's local share of a limit while Redis is down follows the replicas
        r"|ConfigMap/keel-config:data\.KEEL_LIMITER_INSTANCES"
    ),
    "resources": r"(Deployment|Job)/[^:]+:spec\.template\.spec\.containers\[\d+\]\.resources\..+",
    "hostnames": r"Ingress/keel-api:spec\.(rules\[\d+\]\.host|tls\[\d+\]\.hosts\[\d+\])",
    "secret names": (
        r"Ingress/keel-api:spec\.tls\[\d+\]\.secretName"
        r"|[^:]+:.*\.(secretRef\.name|secret\.secretName)"
    ),
    "profile": r"ConfigMap/keel-config:data\.KEEL_ENV",
}
_ALLOWED = re.compile("|".join(f"(?:{pattern})" for pattern in ALLOWED_DIFFERENCES.values()))
# The ConfigMap's name ends in a hash of its data (which may differ only where allowed).
_CONFIG_HASH = re.compile(r"\b(keel-config)-[a-z0-9]{10}\b")


def validation_problems(document: dict[str, Any]) -> list[str]:
    """Why ``document`` is not a valid object of its kind (empty when it is)."""
    model = CUSTOM_RESOURCES.get((document.get("apiVersion", ""), document.get("kind", "")))
    if model is None:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            return [f"{'.'.join(map(str, error.path))}: {error.message}"]
        except kubernetes_validate.SchemaNotFoundError as error:
            return [f"no schema: {error.message}"]
        return []
    try:
        parsed = model.model_validate(document)
    except ValidationError as error:
        return [str(error)]
    # The generated models ignore unknown fields and coerce types; a CRD's structural schema
    # prunes the first and rejects the second. The model's dump must be the document itself.
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return [f"{path}: unknown field or wrong type" for path in _mismatches(document, dumped)]


def _mismatches(given: object, kept: object, path: str = "") -> Iterator[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}"
            else:
                yield from _mismatches(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        for index, (item, kept_item) in enumerate(zip(given, kept, strict=True)):
            yield from _mismatches(item, kept_item, f"{path}[{index}]")
    elif given != kept or type(given) is not type(kept):
        yield path or "."


def flatten(document: dict[str, Any], namespace: str) -> dict[str, object]:
    """``Kind/name:path.to[0].leaf`` → value, with the overlay's own namespace and the
    ConfigMap hash written as placeholders inside strings (e.g. a PromQL label matcher)."""
    name = _CONFIG_HASH.sub(r"\1", document["metadata"]["name"])
    prefix = f"{document['kind']}/{name}:"
    leaves: dict[str, object] = {}

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, str):
            text = _CONFIG_HASH.sub(r"\1", value)
            leaves[prefix + path] = text.replace(f'namespace="{namespace}"', 'namespace="$NS"')
        else:
            leaves[prefix + path] = value

    walk(document, "")
    return leaves


def parity_violations(
    first: tuple[dict[str, Any], ...],
    first_namespace: str,
    second: tuple[dict[str, Any], ...],
    second_namespace: str,
) -> list[str]:
    """Every path where the renderings differ outside ``ALLOWED_DIFFERENCES``."""
    left: dict[str, object] = {}
    right: dict[str, object] = {}
    for document in first:
        left.update(flatten(document, first_namespace))
    for document in second:
        right.update(flatten(document, second_namespace))
    return sorted(
        f"{path}: {left.get(path, '<absent>')!r} != {right.get(path, '<absent>')!r}"
        for path in left.keys() | right.keys()
        if left.get(path, "<absent>") != right.get(path, "<absent>")
        and not _ALLOWED.fullmatch(path)
    )
