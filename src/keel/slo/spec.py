"""An SLO file: what Keel promises, as data operators review.

The file is OpenSLO-like YAML (``apiVersion``/``kind: SLO``/``metadata``/``spec``
with ``timeWindow``, ``budgetingMethod: Occurrences`` and ``objectives``), one
document per objective, narrowed to what Keel can measure: the share of its own
requests that were good, read from the request histogram
(``http_server_request_duration_seconds``). An *availability* SLO counts a
request bad when it answered 5xx; a *latency* SLO when it took longer than
``objectives[0].value`` seconds.

The latency threshold must be one of the histogram's bucket edges: "the share
of requests at most T" is then one bucket's counter, exact, where any other T
would be an interpolation that can be wrong by a whole bucket. The edges are
the running code's (``keel.observe.metrics``: OpenTelemetry's boundaries plus
``KEEL_SLO_LATENCY_SECONDS``) and are passed in as :class:`RequestHistogram`,
so this module knows nothing of Prometheus' client.

``indicator.selector`` is a list of PromQL label matchers choosing the requests
that count. Probes and ``/metrics`` carry ``slo="false"``, so ``slo="true"``
leaves them out; synthetic checks are never on the histogram at all, and the
rollups (:mod:`keel.slo.rollup`) apply the same selector. ``indicator.sample``
is one label set the selector matches, used to build the promtool tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from keel.errors import ConfigurationError

API_VERSION = "keel.dev/v1"
DEFAULT_SOURCE = "keel/slo/default_slo.yaml"
STATUS_LABEL = "http_response_status_code"
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MATCHER = re.compile(r'^([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"$')
# libyaml's loader when installed (same data, several times faster); the *dumper* stays
# pure Python (keel.slo.rules), so the rules' bytes and hash never depend on libyaml.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DEFAULT_SAMPLE = {"http_request_method": "POST", "http_route": "/v1/recognitions", "slo": "true"}


class SLOSpecError(ConfigurationError):
    """An SLO file Keel refuses: says which file, which objective and which field."""

    title = "Invalid SLO file"

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(f"{source}: {message}", source=source)
        self.source = source
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestHistogram:
    """What the SLO rules read: the histogram's name, its labels and bucket edges."""

    metric: str
    labels: frozenset[str]
    bucket_edges: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One PromQL label matcher: ``label op "value"``."""

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str

    def render(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'

    def matches(self, labels: Mapping[str, str]) -> bool:
        """As Prometheus decides it: a missing label is the empty string, regexes anchored."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(_unescape(self.value), actual) is not None
        return found if self.op == "=~" else not found


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\\\", "\\")


def le_label(edge: float) -> str:
    """A bucket edge as the exposition spells its ``le`` label (0.3 → "0.3", 1 → "1.0")."""
    text: str = floatToGoString(edge)  # type: ignore[no-untyped-call]
    return text


def parse_duration(text: str) -> int:
    """``30d`` → seconds; Prometheus' units m, h, d, w, one unit per duration."""
    found = re.fullmatch(r"([1-9][0-9]*)([mhdw])", text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 5m, 6h, 30d or 4w")
    return int(found.group(1)) * _UNITS[found.group(2)]


def render_duration(seconds: int) -> str:
    """Seconds → the largest whole Prometheus unit (``259200`` → ``3d``)."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    raise ValueError(f"{seconds} s is not a whole number of minutes")


# --- the file's shape (OpenSLO field names) ---------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Metadata(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    displayName: str | None = None  # noqa: N815 - OpenSLO's field name


class _TimeWindow(_Model):
    duration: str
    isRolling: Literal[True] = True  # noqa: N815 - OpenSLO's field name


class _Objective(_Model):
    displayName: str | None = None  # noqa: N815 - OpenSLO's field name
    target: float = Field(gt=0, lt=1)
    op: Literal["lte"] | None = None
    value: float | None = Field(default=None, gt=0)


class _Indicator(_Model):
    kind: Literal["availability", "latency"]
    selector: tuple[str, ...] = Field(min_length=1)
    sample: dict[str, str] = Field(default_factory=lambda: dict(_DEFAULT_SAMPLE))


class _Spec(_Model):
    description: str = ""
    service: str = "keel"
    indicator: _Indicator
    timeWindow: tuple[_TimeWindow] = Field(min_length=1, max_length=1)  # noqa: N815
    budgetingMethod: Literal["Occurrences"] = "Occurrences"  # noqa: N815
    objectives: tuple[_Objective] = Field(min_length=1, max_length=1)

    @model_validator(mode="after")
    def _threshold_matches_kind(self) -> _Spec:
        objective = self.objectives[0]
        has_threshold = objective.op is not None or objective.value is not None
        if self.indicator.kind == "availability" and has_threshold:
            raise ValueError("an availability objective has no op/value (5xx is the bad event)")
        if self.indicator.kind == "latency" and (objective.op is None or objective.value is None):
            raise ValueError("a latency objective needs op: lte and value: <seconds>")
        return self


class _Document(_Model):
    apiVersion: Literal["keel.dev/v1"]  # noqa: N815 - OpenSLO's field name
    kind: Literal["SLO"]
    metadata: _Metadata
    spec: _Spec


# --- the validated objective -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Objective:
    """One service level objective, checked against the histogram it is measured on."""

    name: str
    display_name: str
    description: str
    kind: Literal["availability", "latency"]
    selector: tuple[Matcher, ...]
    sample: Mapping[str, str]
    target: Decimal
    period_seconds: int
    threshold_seconds: float | None

    @property
    def error_budget(self) -> Decimal:
        """The share of requests allowed to be bad (``1 - target``, exact: 0.9995 → 0.0005)."""
        return Decimal(1) - self.target

    @property
    def period(self) -> str:
        return render_duration(self.period_seconds)

    @property
    def threshold_le(self) -> str:
        """The latency threshold as the histogram's ``le`` label value (latency SLOs only)."""
        if self.threshold_seconds is None:
            raise ValueError(f"SLO {self.name} is not a latency SLO: it has no threshold")
        return le_label(self.threshold_seconds)


def default_slo_text() -> str:
    return resources.files("keel.slo").joinpath("default_slo.yaml").read_text("utf-8")


def read_slo_file(path: Path | None) -> tuple[str, str]:
    """The text of the SLO file at ``path`` (``None``: the shipped one) and its name."""
    if path is None:
        return default_slo_text(), DEFAULT_SOURCE
    try:
        return Path(path).read_text("utf-8"), str(path)
    except OSError as error:
        raise SLOSpecError(f"cannot read: {error.strerror}", source=str(path)) from None


def load_objectives(path: Path | None, histogram: RequestHistogram) -> tuple[Objective, ...]:
    """The SLOs of ``path`` (``None``: the file shipped with Keel), validated."""
    text, source = read_slo_file(path)
    return parse_objectives(text, histogram, source=source)


def parse_objectives(
    text: str, histogram: RequestHistogram, *, source: str = "<slo>"
) -> tuple[Objective, ...]:
    """Validate SLO YAML ``text`` (one document per SLO); ``source`` names it in errors."""
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=_LOADER) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SLOSpecError(f"{where}YAML syntax: {problem}", source=source) from None
    if not documents:
        raise SLOSpecError("no SLO in the file", source=source)
    objectives: list[Objective] = []
    for index, data in enumerate(documents):
        name = data.get("metadata", {}).get("name") if isinstance(data, dict) else None
        where = f"SLO {name!r}" if isinstance(name, str) else f"document {index + 1}"
        try:
            document = _Document.model_validate(data)
            objectives.append(_objective(document, histogram))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "(document)"
            raise SLOSpecError(f"{where}: {field}: {first['msg']}", source=source) from None
        except ValueError as error:
            raise SLOSpecError(f"{where}: {error}", source=source) from None
    names = [objective.name for objective in objectives]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SLOSpecError(f"SLO names must be unique: {', '.join(duplicates)}", source=source)
    return tuple(objectives)


# The longest burn-rate window (keel.slo.rules): a period must be longer to budget over.
LONGEST_ALERT_WINDOW = 3 * 86400


def _objective(document: _Document, histogram: RequestHistogram) -> Objective:
    spec = document.spec
    period = parse_duration(spec.timeWindow[0].duration)
    if period <= LONGEST_ALERT_WINDOW:
        raise ValueError(
            f"spec.timeWindow.0.duration: {spec.timeWindow[0].duration} is not longer than the "
            "3d alert window; use a period such as 28d or 30d"
        )
    selector = tuple(_matcher(text, histogram) for text in spec.indicator.selector)
    sample = _sample(spec.indicator.sample, selector, histogram)
    objective = spec.objectives[0]
    return Objective(
        name=document.metadata.name,
        display_name=document.metadata.displayName or document.metadata.name,
        description=spec.description,
        kind=spec.indicator.kind,
        selector=selector,
        sample=sample,
        target=Decimal(repr(objective.target)),
        period_seconds=period,
        threshold_seconds=(
            None if objective.value is None else bucket_edge(objective.value, histogram)
        ),
    )


def bucket_edge(value: float, histogram: RequestHistogram) -> float:
    """``value`` if it is one of the histogram's bucket edges; refused otherwise."""
    for edge in histogram.bucket_edges:
        if math.isclose(edge, value, rel_tol=1e-9, abs_tol=0.0):
            return edge
    edges = ", ".join(f"{edge:g}" for edge in histogram.bucket_edges)
    raise ValueError(
        f"spec.objectives.0.value: {value:g} s is not a bucket edge of {histogram.metric}, "
        f"so the share of requests within it cannot be counted exactly; use one of {edges} "
        "(or set KEEL_SLO_LATENCY_SECONDS to it, which adds it as an edge)"
    )


def _matcher(text: str, histogram: RequestHistogram) -> Matcher:
    found = _MATCHER.fullmatch(text.strip())
    if found is None:
        raise ValueError(f'spec.indicator.selector: {text!r} is not a matcher like label="value"')
    label, op, value = found.groups()
    if label == STATUS_LABEL:
        raise ValueError(
            f"spec.indicator.selector: {label} is the rules' own (they choose the bad events)"
        )
    if label not in histogram.labels:
        known = ", ".join(sorted(histogram.labels))
        raise ValueError(
            f"spec.indicator.selector: {histogram.metric} has no label {label!r} (it has {known})"
        )
    if op in ("=~", "!~"):
        try:
            re.compile(_unescape(value))
        except re.error as error:
            raise ValueError(f"spec.indicator.selector: {text!r}: bad regex: {error}") from None
    return Matcher(label, op, value)  # type: ignore[arg-type]


def _sample(
    sample: Mapping[str, str], selector: Sequence[Matcher], histogram: RequestHistogram
) -> dict[str, str]:
    unknown = sorted(label for label in sample if label not in histogram.labels - {STATUS_LABEL})
    if unknown:
        raise ValueError(f"spec.indicator.sample: labels not allowed here: {', '.join(unknown)}")
    missed = [matcher.render() for matcher in selector if not matcher.matches(sample)]
    if missed:
        raise ValueError(
            f"spec.indicator.sample {dict(sample)} does not match {', '.join(missed)}: give a "
            "sample label set the selector counts (the promtool tests send it)"
        )
    return dict(sample)


def objectives_json(objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    return [
        {
            "name": objective.name,
            "kind": objective.kind,
            "target": str(objective.target),
            "period": objective.period,
            "threshold_seconds": objective.threshold_seconds,
            "selector": [matcher.render() for matcher in objective.selector],
        }
        for objective in objectives
    ]
