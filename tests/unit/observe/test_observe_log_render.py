"""The per-line shortcuts write exactly what structlog's own processors would."""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.dev import ConsoleRenderer, plain_traceback

from keel.observe.log_render import PlainConsoleRenderer, UtcTimestamp


class Colour(enum.StrEnum):
    RED = "red wine"


def reference(event_dict: dict[str, Any]) -> str:
    renderer = ConsoleRenderer(colors=False, exception_formatter=plain_traceback)
    return str(renderer(None, "info", dict(event_dict)))


plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(alphabet=" \t\r\n=\"'aZ9/{}é", max_size=12),
    st.sampled_from(["", " ", "a=b", "it's", 'say "hi"', "tab\there", "line\nbreak"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["k", "v w"]), st.integers(), max_size=2),
    st.just(Colour.RED),
)
keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@given(
    fields=st.dictionaries(keys, plain_values, max_size=8),
    fixed=st.dictionaries(
        st.sampled_from(["timestamp", "level", "event", "logger", "logger_name"]),
        st.sampled_from(["", "info", "warning", "exception", "http_request", "keel.access"]),
    ),
)
def test_a_plain_line_is_rendered_exactly_as_structlogs_console_renderer_would(
    fields: dict[str, Any], fixed: dict[str, str]
) -> None:
    event_dict = {**fields, **fixed}
    assert PlainConsoleRenderer()(None, "info", dict(event_dict)) == reference(event_dict)


def test_the_access_line_is_rendered_exactly_as_structlogs_console_renderer_would() -> None:
    line = {
        "timestamp": "2026-12-03T20:02:57.117642Z",
        "level": "info",
        "event": "http_request",
        "method": "POST",
        "route": "/v1/recognitions/{recognition_id}",
        "status": 201,
        "duration_ms": 3.412,
        "user": "abcdef0123456789",
        "org": "0123456789abcdef",
        "request_id": "a" * 32,
        "trace_id": "b" * 32,
        "span_id": "c" * 16,
    }
    rendered = PlainConsoleRenderer()(None, "info", dict(line))
    assert rendered == reference(line)
    assert rendered.startswith("2026-12-03T20:02:57.117642Z [info     ] http_request ")
    assert "status=201 " in rendered
    assert "trace_id=" + "b" * 32 in rendered


@pytest.mark.parametrize("extra", ["exception", "stack"])
def test_a_line_with_a_traceback_goes_to_structlogs_renderer(extra: str) -> None:
    line = {"event": "failed", "level": "error", extra: "Traceback (most recent call last):\n  x"}
    assert PlainConsoleRenderer()(None, "error", dict(line)) == reference(line)


def test_the_timestamp_is_now_in_utc_in_iso_8601_with_z() -> None:
    before = datetime.now(UTC)
    stamped = UtcTimestamp()(None, "info", {})["timestamp"]
    after = datetime.now(UTC)
    assert stamped.endswith("Z")
    assert before.replace(microsecond=0) <= datetime.fromisoformat(stamped) <= after


@pytest.mark.parametrize(
    ("nanoseconds", "expected"),
    [
        (1_796_328_177_117_642_999, "2026-12-03T20:02:57.117642Z"),
        (1_796_328_177_000_000_500, "2026-12-03T20:02:57Z"),  # as datetime.isoformat
        (1_796_328_178_000_001_000, "2026-12-03T20:02:58.000001Z"),  # the next second
    ],
)
def test_the_timestamp_has_the_text_structlogs_iso_stamper_gives(
    monkeypatch: pytest.MonkeyPatch, nanoseconds: int, expected: str
) -> None:
    stamper = UtcTimestamp()
    stamper(None, "info", {})  # a second cached already
    monkeypatch.setattr(time, "time_ns", lambda: nanoseconds)
    stamped = stamper(None, "info", {})["timestamp"]
    assert stamped == expected
    as_structlog = datetime.fromtimestamp(nanoseconds // 1000 / 1e6, UTC).isoformat()
    assert stamped == as_structlog.replace("+00:00", "Z")
