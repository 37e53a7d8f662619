"""The SLO file: what it accepts, and what it refuses with a message naming the fault."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.observe.metrics import OTEL_DURATION_BUCKETS, request_histogram
from keel.slo import SLOSpecError, load_objectives, parse_objectives
from keel.slo.spec import Matcher, default_slo_text, parse_duration, render_duration

HISTOGRAM = request_histogram(0.3)

LATENCY = """
apiVersion: keel.dev/v1
kind: SLO
metadata: {{name: fast}}
spec:
  indicator: {{kind: latency, selector: ['slo="true"']}}
  timeWindow: [{{duration: 30d}}]
  objectives: [{{op: lte, value: {value}, target: 0.99}}]
"""


def test_the_shipped_file_is_the_core_api_availability_and_latency_slos() -> None:
    availability, latency = load_objectives(None, HISTOGRAM)
    assert (availability.name, availability.kind) == ("api-availability", "availability")
    assert availability.target == Decimal("0.9995")
    assert availability.error_budget == Decimal("0.0005")  # exact, not 0.000499999…
    assert availability.period_seconds == 30 * 86400
    assert [m.render() for m in availability.selector] == ['slo="true"', 'http_route=~"/v1/.*"']
    assert (latency.kind, latency.threshold_seconds, latency.threshold_le) == (
        "latency",
        0.3,
        "0.3",
    )


def test_the_shipped_selector_leaves_out_probes_metrics_and_non_api_paths() -> None:
    availability = load_objectives(None, HISTOGRAM)[0]

    def counted(route: str, slo: str) -> bool:
        labels = {"http_route": route, "slo": slo}
        return all(matcher.matches(labels) for matcher in availability.selector)

    assert counted("/v1/recognitions/{recognition_id}", "true")
    for probe in ("/live", "/ready", "/health", "/metrics", "/version"):
        assert not counted(probe, "false")
    assert not counted("/docs", "true")
    assert not counted("unmatched", "true")


def test_a_latency_threshold_that_is_not_a_bucket_edge_is_refused_with_the_edges() -> None:
    with pytest.raises(SLOSpecError) as refused:
        parse_objectives(LATENCY.format(value=0.2), HISTOGRAM, source="slo.yaml")
    message = refused.value.detail
    assert message.startswith("slo.yaml: SLO 'fast': spec.objectives.0.value: 0.2 s")
    assert "not a bucket edge of http_server_request_duration_seconds" in message
    assert "0.25, 0.3, 0.5" in message  # the real edges, the setting's included


@pytest.mark.parametrize("edge", [*OTEL_DURATION_BUCKETS, 0.3])
def test_every_real_bucket_edge_is_accepted(edge: float) -> None:
    (objective,) = parse_objectives(LATENCY.format(value=edge), HISTOGRAM)
    assert objective.threshold_seconds == edge


def test_the_latency_setting_is_what_makes_a_threshold_an_edge() -> None:
    text = LATENCY.format(value=0.42)
    with pytest.raises(SLOSpecError):
        parse_objectives(text, request_histogram(0.3))
    (objective,) = parse_objectives(text, request_histogram(0.42))
    assert objective.threshold_le == "0.42"


@pytest.mark.parametrize(
    ("change", "fault"),
    [
        (("selector: ['slo=\"true\"']", "selector: ['pod=\"a\"']"), "has no label 'pod'"),
        (
            ("selector: ['slo=\"true\"']", "selector: ['http_response_status_code=\"200\"']"),
            "the rules' own",
        ),
        (("selector: ['slo=\"true\"']", "selector: ['slo == true']"), "is not a matcher"),
        (("duration: 30d", "duration: 3d"), "not longer than the 3d alert window"),
        (("duration: 30d", "duration: 30 days"), "is not a duration"),
        (("op: lte, value: 0.3, ", ""), "a latency objective needs op: lte and value"),
        (("target: 0.99", "target: 1"), "spec.objectives.0.target"),
        (("kind: SLO", "kind: Service"), "kind"),
        (("metadata: {name: fast}", "metadata: {name: Fast_SLO}"), "metadata.name"),
        (
            ("selector: ['slo=\"true\"']", "selector: ['slo=\"true\"'], sample: {slo: 'false'}"),
            'does not match slo="true"',
        ),
    ],
)
def test_a_faulty_slo_is_refused_naming_the_fault(change: tuple[str, str], fault: str) -> None:
    text = LATENCY.format(value=0.3)
    assert change[0] in text
    with pytest.raises(SLOSpecError) as refused:
        parse_objectives(text.replace(*change), HISTOGRAM, source="slo.yaml")
    assert fault in refused.value.detail


def test_an_availability_objective_with_a_threshold_is_refused() -> None:
    text = default_slo_text().replace(
        "      target: 0.9995", "      value: 0.3\n      target: 0.9995"
    )
    with pytest.raises(SLOSpecError, match="an availability objective has no op/value"):
        parse_objectives(text, HISTOGRAM)


def test_yaml_syntax_errors_name_the_line_and_duplicate_names_are_refused() -> None:
    with pytest.raises(SLOSpecError, match=r"slo.yaml: line 3: YAML syntax"):
        parse_objectives("apiVersion: x\nkind: SLO\n  bad: indent\n", HISTOGRAM, source="slo.yaml")
    twice = LATENCY.format(value=0.3) + "---" + LATENCY.format(value=0.5)
    with pytest.raises(SLOSpecError, match="SLO names must be unique: fast"):
        parse_objectives(twice, HISTOGRAM)
    with pytest.raises(SLOSpecError, match="no SLO in the file"):
        parse_objectives("# nothing\n", HISTOGRAM)


@pytest.mark.parametrize(
    ("matcher", "value", "matches"),
    [
        (Matcher("http_route", "=~", "/v1/.*"), "/v1/users", True),
        (Matcher("http_route", "=~", "/v1/.*"), "/x/v1/users", False),  # anchored, as PromQL
        (Matcher("http_route", "!~", "/v1/.*"), "/ready", True),
        (Matcher("traffic", "!=", "synthetic"), "", True),  # a missing label is ""
        (Matcher("traffic", "=", "synthetic"), "", False),
    ],
)
def test_matchers_decide_as_prometheus_does(matcher: Matcher, value: str, matches: bool) -> None:
    labels = {matcher.label: value} if value else {}
    assert matcher.matches(labels) is matches


@given(st.integers(min_value=1, max_value=10**7))
def test_durations_round_trip_through_the_largest_whole_unit(minutes: int) -> None:
    text = render_duration(minutes * 60)
    assert parse_duration(text) == minutes * 60
    assert text[-1] in "mhdw"
