"""What a log line may hold: tracebacks without locals, redacted fields, a bounded size."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from keel.observe.log_lines import (
    MAX_EXCEPTION_CHARS,
    MAX_FIELD_CHARS,
    MAX_LINE_CHARS,
    BoundedRenderer,
    SafeFields,
    format_exception,
    truncate,
)
from keel.observe.logs import configure_logging, flush_logs
from keel.redaction import Redactor
from keel.settings import Settings

TOKEN = "keel_Zq9" + "T" * 40
SECRET_KEY = "log-lines-secret-key-0123456789abcdef"
DATABASE_URL = "postgresql+asyncpg://root:s3cr3t-pw@127.0.0.1/keel"
FORMATS = ["console", "json"]


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """Keel's logging, in the format the test names, into a buffer; restored afterwards."""
    buffer = io.StringIO()
    configure_logging(
        Settings(
            log_format=request.param,
            secret_key=SecretStr(SECRET_KEY),
            database_url=DATABASE_URL,
        ),
        stream=buffer,
    )
    yield buffer
    configure_logging(Settings())


def _fail_with_secrets_in_locals() -> None:
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    settings = {"database_url": DATABASE_URL, "key": SECRET_KEY}
    big = "y" * 500_000
    raise RuntimeError(f"boom while holding {len(headers)} headers, {len(settings)}, {len(big)}")


@pytest.mark.parametrize("capture", FORMATS, indirect=True)
def test_an_exception_line_has_the_traceback_but_no_locals(capture: io.StringIO) -> None:
    try:
        _fail_with_secrets_in_locals()
    except RuntimeError:
        structlog.get_logger("t").exception("unhandled_exception", path="/v1/x")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    assert flush_logs()
    output = capture.getvalue()
    assert output.count("in _fail_with_secrets_in_locals") == 2  # its frame, in both lines
    assert output.count("RuntimeError: boom while holding 1 headers") == 2
    for secret in (TOKEN, "s3cr3t-pw", SECRET_KEY, "yyyyyyyyyy"):
        assert secret not in output


@pytest.mark.parametrize("capture", FORMATS, indirect=True)
def test_secrets_in_fields_messages_and_objects_are_redacted(capture: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info("request_seen", authorization=f"Bearer {TOKEN}", headers={"Cookie": "sid=abcdef99"})
    log.warning("connecting", url=DATABASE_URL, note=f"key={SECRET_KEY}")
    log.error(
        "settings", settings=Settings(secret_key=SecretStr(SECRET_KEY), database_url=DATABASE_URL)
    )
    logging.getLogger("sqlalchemy.engine").warning("could not reach %s", DATABASE_URL)
    assert flush_logs()
    output = capture.getvalue()
    for secret in (TOKEN, "abcdef99", "s3cr3t-pw", SECRET_KEY):
        assert secret not in output
    assert "root:***@127.0.0.1" in output  # the URL stays useful


@pytest.mark.parametrize("capture", FORMATS, indirect=True)
def test_no_line_exceeds_the_bound_however_much_is_logged(capture: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info("huge_field", blob="x" * 1_000_000)
    log.info("many_fields", **{f"field_{i}": "z" * 2000 for i in range(200)})
    log.info("deep", nested={"a": [{"b": list(range(10_000))}] * 100})
    try:
        raise ValueError("m" * 1_000_000)
    except ValueError:
        log.exception("huge_exception")
    logging.getLogger("uvicorn.error").error("%s", "u" * 1_000_000)
    assert flush_logs()
    lines = capture.getvalue().splitlines()
    # A console line's traceback follows on the next lines; each record is bounded whole.
    assert sum(len(line) + 1 for line in lines) < 5 * MAX_LINE_CHARS
    assert all(len(line) <= MAX_LINE_CHARS for line in lines)
    if lines[0].startswith("{"):  # JSON: one line per record, each still valid JSON
        events = [json.loads(line)["event"] for line in lines]
        assert events[:4] == ["huge_field", "many_fields", "deep", "huge_exception"]
        assert events[4].startswith("uuuu")
        assert len(events[4]) <= MAX_FIELD_CHARS


def test_truncate_keeps_the_start_and_the_end_within_the_limit() -> None:
    text = "START" + "-" * 10_000 + "END"
    cut = truncate(text, 1000)
    assert len(cut) == 1000
    assert cut.startswith("START")
    assert cut.endswith("END")
    assert "cut from 10008 chars" in cut


@given(st.text(max_size=3000), st.integers(min_value=40, max_value=2500))
@settings(max_examples=200)
def test_truncate_never_exceeds_its_limit(text: str, limit: int) -> None:
    cut = truncate(text, limit)
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut == text


def test_a_deep_recursion_traceback_is_bounded() -> None:
    def down(n: int) -> int:
        return down(n + 1) + 1

    try:
        down(0)
    except RecursionError as error:
        text = format_exception((type(error), error, error.__traceback__))
    assert len(text) <= MAX_EXCEPTION_CHARS
    assert text.rstrip().endswith("maximum recursion depth exceeded")


def test_safe_fields_bound_every_kind_of_value() -> None:
    safe = SafeFields(Redactor())
    event = safe(
        None,
        "info",
        {
            "event": "e",
            "text": "t" * 10 * MAX_FIELD_CHARS,
            "items": list(range(1000)),
            "mapping": {str(i): i for i in range(1000)},
            "blob": b"\x00" * 100_000,
            "count": 3,
            "nothing": None,
        },
    )
    assert len(event["text"]) == MAX_FIELD_CHARS
    assert len(event["items"]) == 51
    assert len(event["mapping"]) == 51
    assert len(event["blob"]) <= MAX_FIELD_CHARS
    assert (event["count"], event["nothing"]) == (3, None)


def test_a_json_line_over_the_bound_is_replaced_by_valid_json_naming_the_event() -> None:
    renderer = BoundedRenderer(structlog.processors.JSONRenderer(), json_lines=True, limit=200)
    line = renderer(None, "info", {"event": "wide", "level": "info", "x": "q" * 1000})
    assert len(line) <= 200
    assert json.loads(line)["event"] == "wide"
    assert "log_line_cut" in json.loads(line)
