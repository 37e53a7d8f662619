"""structlog for Keel's own lines and for the standard library's (uvicorn, SQLAlchemy).

JSON lines in ``staging``/``prod``, readable console lines in ``dev``
(``KEEL_LOG_FORMAT`` overrides). Request-scoped fields — request id, trace id,
span id — live in structlog's contextvars, so every line written while a
request is being served carries them without being passed around.
Standard-library records go through the same processors via
``ProcessorFormatter``, so uvicorn's own lines have the same shape.

Every line, Keel's or the standard library's, is rendered on the calling
thread with its traceback but never frame locals, redacted and bounded
(:mod:`keel.observe.log_lines`), then written by a writer thread
(:mod:`keel.observe.log_writer`): logging never blocks the event loop.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from prometheus_client import Counter
from structlog.types import Processor

from keel.observe.log_lines import BoundedRenderer, SafeFields, render_exception
from keel.observe.log_render import PlainConsoleRenderer, UtcTimestamp
from keel.observe.log_writer import LineWriter, QueuedLoggerFactory
from keel.redaction import Redactor
from keel.settings import Profile, Settings

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def log_format(settings: Settings) -> str:
    if settings.log_format is not None:
        return settings.log_format
    return "console" if settings.env is Profile.DEV else "json"


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, dropped_lines: Counter | None = None
) -> None:
    """Configure structlog and the root stdlib logger; safe to call more than once.

    ``dropped_lines``: the counter of lines a slow sink made the writer drop (the
    app's registry; the CLI's logging before an app exists counts them nowhere).

    Calling it again flushes and replaces the previous writer, so a line logged
    before the call is never lost and never written twice.
    """
    level = _LEVELS.get(settings.log_level.lower(), logging.INFO)
    output = stream or sys.stderr
    json_lines = log_format(settings) == "json"
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json_lines else PlainConsoleRenderer()
    )
    shared = shared_processors()
    safety = safety_processors(settings)
    bounded = BoundedRenderer(renderer, json_lines=json_lines)
    writer = LineWriter(
        output, dropped_notice=_dropped_notice(json_lines), dropped_counter=dropped_lines
    )
    structlog.configure(
        processors=[*shared, *safety, bounded],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=QueuedLoggerFactory(writer),
        cache_logger_on_first_use=False,
    )
    handler = QueuedHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, *safety],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, bounded],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, QueuedHandler):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Alembic announces its dialect at info on every revision read (/ready, /version).
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # Keel writes its own access line (http/trace.py); uvicorn's would repeat it.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


def shared_processors() -> list[Processor]:
    """What every line gains first: the request's context, its level and a timestamp."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcTimestamp(),
    ]


def safety_processors(settings: Settings) -> list[Processor]:
    """What makes a line safe to write: a traceback without locals, redacted bounded fields.

    Also the chain ``keel.testing.capture_logs`` runs, so a test sees what would be written.
    """
    return [render_exception, SafeFields(Redactor.from_settings(settings))]


def flush_logs(timeout: float = 5.0) -> bool:
    """Wait until every line logged so far is written (tests, commands about to exit)."""
    flushed = True
    for handler in logging.getLogger().handlers:
        if isinstance(handler, QueuedHandler):
            flushed = handler.writer.flush(timeout) and flushed
    return flushed


class QueuedHandler(logging.Handler):
    """The root handler: formats a stdlib record here, writes it on the writer's thread."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        super().close()


def _dropped_notice(json_lines: bool) -> Callable[[int], str]:
    def notice(count: int) -> str:
        fields = {
            "event": "log_lines_dropped",
            "level": "warning",
            "count": count,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        if json_lines:
            return json.dumps(fields)
        return f"{fields['timestamp']} [warning  ] log_lines_dropped count={count}"

    return notice


def bind_request(**fields: Any) -> None:
    structlog.contextvars.bind_contextvars(**fields)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
