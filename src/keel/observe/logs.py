"""structlog for Keel's own lines and for the standard library's (uvicorn, SQLAlchemy).

JSON lines in ``staging``/``prod``, readable console lines in ``dev``
(``KEEL_LOG_FORMAT`` overrides). Request-scoped fields — request id, trace id,
span id — live in structlog's contextvars, so every line written while a
request is being served carries them without being passed around.
Standard-library records go through the same processors via
``ProcessorFormatter``, so uvicorn's own lines have the same shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.types import Processor

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


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the root stdlib logger; safe to call more than once."""
    level = _LEVELS.get(settings.log_level.lower(), logging.INFO)
    output = stream or sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if log_format(settings) == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.dict_tracebacks)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_keel", False):
            root.removeHandler(existing)
    handler._keel = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Alembic announces its dialect at info on every revision read (/ready, /version).
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # Keel writes its own access line (observe/context.py); uvicorn's would repeat it.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


def bind_request(**fields: Any) -> None:
    structlog.contextvars.bind_contextvars(**fields)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
