"""The two per-line costs of the log chain that do not depend on what a line says.

Every request writes an access line, so what every line pays is paid per request.
structlog's ``TimeStamper`` builds an aware ``datetime`` and formats it whole for
each line, and its ``ConsoleRenderer`` formats each field through a column object
and a ``StringIO``: together about three quarters of a console line's rendering.

- :class:`UtcTimestamp` writes the same ISO 8601 text (``…T20:02:57.117642Z``,
  no fraction when the microseconds are zero, as ``datetime.isoformat``) from the
  clock's nanoseconds, formatting the date and time of day once per second.
- :class:`PlainConsoleRenderer` writes the same text as a colourless
  ``ConsoleRenderer`` (sorted ``key=value`` pairs after timestamp, level, event and
  logger) for a line of plain fields, and hands any other line — a traceback, a
  stack — to that renderer. Equality with structlog's output is a property test.

Both come after the safety processors have run, so neither sees an unredacted value.
"""

from __future__ import annotations

import re
import time

from structlog.dev import ConsoleRenderer, plain_traceback
from structlog.typing import EventDict, WrappedLogger

# What makes ConsoleRenderer print a string through repr() rather than as is.
_NEEDS_REPR = re.compile("[ \t=\r\n\"']").search
_EVENT_WIDTH = 30  # ConsoleRenderer's default pad_event_to
_MISSING = object()


class UtcTimestamp:
    """``timestamp``: now in UTC, ISO 8601 with ``Z`` (a structlog processor)."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
        second = self._second  # one tuple: a line on another thread sees a matching pair
        if second[0] != seconds:
            second = self._second = (
                seconds,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)),
            )
        event_dict["timestamp"] = f"{second[1]}.{micros:06d}Z" if micros else f"{second[1]}Z"
        return event_dict


class PlainConsoleRenderer:
    """A colourless ``ConsoleRenderer``'s line, formatted directly (a structlog processor)."""

    def __init__(self) -> None:
        self.fallback = ConsoleRenderer(colors=False, exception_formatter=plain_traceback)
        self._levels: dict[str, str] = {}
        self._level_column = next(c.formatter for c in self.fallback.columns if c.key == "level")

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        if "exception" in event_dict or "exc_info" in event_dict or "stack" in event_dict:
            return self.fallback(logger, method, event_dict)
        parts: list[str] = []
        timestamp = event_dict.pop("timestamp", _MISSING)
        if timestamp is not _MISSING:
            parts.append(str(timestamp))
        level = event_dict.pop("level", _MISSING)
        if level is not _MISSING:
            parts.append(self._level(level))
        event = event_dict.pop("event", _MISSING)
        if event is not _MISSING:
            parts.append(str(event).ljust(_EVENT_WIDTH))
        for key in ("logger", "logger_name"):
            name = event_dict.pop(key, _MISSING)
            if name is not _MISSING:
                parts.append("[" + str(name) + "]")
        for key in sorted(event_dict):
            parts.append(key + "=" + _value(event_dict[key]))
        return " ".join([part for part in parts if part]).rstrip(" ")

    def _level(self, level: object) -> str:
        text = self._levels.get(level) if type(level) is str else None
        if text is None:
            text = self._level_column("level", level)
            if type(level) is str:
                self._levels[level] = text
        return text


def _value(value: object) -> str:
    """A field's value as ``ConsoleRenderer`` writes it: a plain string as is, else ``repr``."""
    if isinstance(value, str):
        # A str subclass (a StrEnum) is written as its characters, as StringIO.write does.
        text = value if type(value) is str else str.__str__(value)
        return text if _NEEDS_REPR(text) is None else repr(value)
    return repr(value)
