"""Models of Argo Rollouts' ``Rollout`` and ``AnalysisTemplate`` (``argoproj.io/v1alpha1``) for
schema checks, in the shape of the cloudcoil models the other custom resources use.

No cloudcoil package ships Argo Rollouts, so these are written from the fields of Argo
Rollouts' v1alpha1 API reference — only the parts a Keel manifest may use, every object
closed (an unknown field is an error, as the CRD's structural schema would prune it) and
int-or-string where the CRD says ``x-kubernetes-int-or-string``. A field Keel starts to use
must be added here from that reference, not guessed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

IntOrString = int | str


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class ObjectMeta(_Closed):
    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class LabelSelector(_Closed):
    match_labels: dict[str, str] | None = None
    match_expressions: list[dict[str, Any]] | None = None


class WorkloadRef(_Closed):
    api_version: str
    kind: str
    name: str
    scale_down: Literal["never", "onsuccess", "progressively"] | None = None


class FieldRef(_Closed):
    field_path: str


class ArgumentValueFrom(_Closed):
    pod_template_hash_value: Literal["Stable", "Latest"] | None = None
    field_ref: FieldRef | None = None


class AnalysisRunArgument(_Closed):
    name: str
    value: str | None = None
    value_from: ArgumentValueFrom | None = None


class TemplateRef(_Closed):
    template_name: str
    cluster_scope: bool | None = None


class RolloutAnalysis(_Closed):
    templates: list[TemplateRef]
    args: list[AnalysisRunArgument] | None = None
    dry_run: list[dict[str, str]] | None = None


class Pause(_Closed):
    duration: IntOrString | None = None


class CanaryStep(_Closed):
    set_weight: int | None = None
    pause: Pause | None = None
    analysis: RolloutAnalysis | None = None
    experiment: dict[str, Any] | None = None
    set_canary_scale: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> CanaryStep:
        if len(self.model_fields_set) != 1:
            raise ValueError("a canary step sets exactly one action")
        return self


class CanaryStrategy(_Closed):
    steps: list[CanaryStep] | None = None
    max_surge: IntOrString | None = None
    max_unavailable: IntOrString | None = None
    canary_service: str | None = None
    stable_service: str | None = None
    analysis: RolloutAnalysis | None = None
    traffic_routing: dict[str, Any] | None = None
    scale_down_delay_seconds: int | None = None


class RolloutStrategy(_Closed):
    canary: CanaryStrategy | None = None
    blue_green: dict[str, Any] | None = None


class RolloutSpec(_Closed):
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: dict[str, Any] | None = None
    workload_ref: WorkloadRef | None = None
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    progress_deadline_seconds: int | None = None
    progress_deadline_abort: bool | None = None
    paused: bool | None = None
    strategy: RolloutStrategy

    @model_validator(mode="after")
    def _pods_from_somewhere(self) -> RolloutSpec:
        if (self.template is None) == (self.workload_ref is None):
            raise ValueError("a Rollout has either a template or a workloadRef")
        return self


class Rollout(_Closed):
    api_version: Literal["argoproj.io/v1alpha1"]
    kind: Literal["Rollout"]
    metadata: ObjectMeta
    spec: RolloutSpec


class PrometheusMetric(_Closed):
    address: str
    query: str
    timeout: int | None = None
    insecure: bool | None = None
    headers: list[dict[str, str]] | None = None


class MetricProvider(_Closed):
    prometheus: PrometheusMetric | None = None
    web: dict[str, Any] | None = None
    job: dict[str, Any] | None = None


class Metric(_Closed):
    name: str
    interval: str | None = None
    initial_delay: str | None = None
    count: IntOrString | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: IntOrString | None = None
    inconclusive_limit: IntOrString | None = None
    consecutive_error_limit: IntOrString | None = None
    provider: MetricProvider


class Argument(_Closed):
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None


class AnalysisTemplateSpec(_Closed):
    metrics: list[Metric]
    args: list[Argument] | None = None
    dry_run: list[dict[str, str]] | None = None


class AnalysisTemplate(_Closed):
    api_version: Literal["argoproj.io/v1alpha1"]
    kind: Literal["AnalysisTemplate"]
    metadata: ObjectMeta
    spec: AnalysisTemplateSpec
