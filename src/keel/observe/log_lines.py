"""What a log line may hold: a traceback without locals, redacted and bounded fields.

Three processors, run in this order on Keel's lines and on the standard
library's (uvicorn, SQLAlchemy) alike:

1. :data:`render_exception` turns ``exc_info`` into a plain-text traceback —
   never the frame locals (rich's and structlog's pretty tracebacks print them,
   and request headers with their bearer tokens are among them) — cut to
   :data:`MAX_EXCEPTION_CHARS`, keeping the start and the end (where the
   innermost frame and the message are).
2. :class:`SafeFields` redacts every field (:mod:`keel.redaction`),
   turns objects into their ``repr`` first so that what a renderer would print
   is what gets redacted, and bounds every string, list and dict.
3. :class:`BoundedRenderer` wraps the renderer: a rendered line longer than
   :data:`MAX_LINE_CHARS` (many fields, or escaping that grew it) is cut in
   the middle (console), or replaced by a short JSON line naming the event and
   the size it would have had (a JSON line cannot be cut and stay JSON).

So no line is unbounded: each costs the calling thread a bounded amount of
work to render and the writer a bounded amount to write.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import Any

from structlog.processors import ExceptionRenderer
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

from keel.redaction import REDACTED, Redactor, is_sensitive_key

MAX_FIELD_CHARS = 2_048
MAX_EXCEPTION_CHARS = 16_384
MAX_LINE_CHARS = 32_768
MAX_ITEMS = 50
MAX_DEPTH = 4
_LONG_FIELDS = frozenset({"exception", "stack"})
_PRIMITIVES = (int, float, bool)
_PRIMITIVE_TYPES = frozenset(_PRIMITIVES)
_ESSENTIALS = ("timestamp", "level", "event", "logger", "request_id", "trace_id")


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters: the start and the end, and how much was cut."""
    if len(text) <= limit:
        return text
    marker = f"…[cut from {len(text)} chars]…"
    room = max(limit - len(marker), 0)
    head = room // 4
    tail = room - head
    return text[:head] + marker + (text[-tail:] if tail else "")


def format_exception(exc_info: ExcInfo) -> str:
    """The standard library's traceback text (no locals), bounded."""
    exc_type, exc_value, exc_traceback = exc_info
    formatted = traceback.TracebackException(
        exc_type,
        exc_value,
        exc_traceback,
        capture_locals=False,
        max_group_width=8,
        max_group_depth=4,
    )
    return truncate("".join(formatted.format()).rstrip("\n"), MAX_EXCEPTION_CHARS)


render_exception = ExceptionRenderer(format_exception)
"""``exc_info`` → an ``exception`` string: the traceback, without locals, bounded."""


class SafeFields:
    """Redacts and bounds every field of an event (a structlog processor)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._sensitive: dict[str, bool] = {}

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        # One search over all the short texts of the line: most lines have nothing to redact.
        texts = [v for v in event_dict.values() if type(v) is str and len(v) <= MAX_FIELD_CHARS]
        redact = self.redactor.text if self.redactor.suspects("\x1f".join(texts)) else None
        for key, value in event_dict.items():
            kind = type(value)
            if kind is str and len(value) <= MAX_FIELD_CHARS:  # most fields: the fast path
                sensitive = self._sensitive.get(key)
                if sensitive is None:
                    sensitive = self._is_sensitive(key)
                if sensitive:
                    event_dict[key] = REDACTED
                elif redact is not None:
                    safe = redact(value)
                    if safe is not value:
                        event_dict[key] = safe
                continue
            if value is None or kind in _PRIMITIVE_TYPES or key.startswith("_"):
                continue  # "_…": ProcessorFormatter's own members (_record, …)
            if self._is_sensitive(key):
                event_dict[key] = REDACTED
                continue
            limit = MAX_EXCEPTION_CHARS if key in _LONG_FIELDS else MAX_FIELD_CHARS
            event_dict[key] = self._safe(value, limit, 0)
        return event_dict

    def _is_sensitive(self, key: str) -> bool:
        known = self._sensitive.get(key)
        if known is None:
            known = self._sensitive[key] = is_sensitive_key(key)
        return known

    def _safe(self, value: object, limit: int, depth: int) -> object:
        if value is None or isinstance(value, _PRIMITIVES):
            return value
        if isinstance(value, str):
            return self._text(value, limit)
        if depth < MAX_DEPTH and isinstance(value, Mapping):
            return self._mapping(value, depth)
        if depth < MAX_DEPTH and isinstance(value, list | tuple | set | frozenset):
            items: list[object] = [
                self._safe(item, MAX_FIELD_CHARS, depth + 1)
                for _, item in zip(range(MAX_ITEMS), value, strict=False)
            ]
            if len(value) > MAX_ITEMS:
                items.append(f"…[{len(value) - MAX_ITEMS} more]")
            return items
        return self._text(_describe(value), limit)

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, object]:
        safe: dict[str, object] = {}
        for index, (key, item) in enumerate(value.items()):
            if index == MAX_ITEMS:
                safe["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            name = self._text(str(key), MAX_FIELD_CHARS)
            safe[name] = (
                REDACTED
                if item is not None and self._is_sensitive(name)
                else self._safe(item, MAX_FIELD_CHARS, depth + 1)
            )
        return safe

    def _text(self, text: str, limit: int) -> str:
        if len(text) > 8 * limit:
            # Redacting a megabyte costs the calling thread; what is cut is never shown.
            text = truncate(text, 2 * limit)
        return truncate(self.redactor.text(text), limit)


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return repr(bytes(value[: 4 * MAX_FIELD_CHARS]))
    try:
        return repr(value)
    except Exception as error:  # a broken __repr__ must not lose the line
        return f"<unrepresentable {type(value).__name__}: {type(error).__name__}>"


class BoundedRenderer:
    """Renders with ``renderer``; a line over ``limit`` becomes a short stand-in."""

    def __init__(self, renderer: Processor, *, json_lines: bool, limit: int = MAX_LINE_CHARS):
        self.renderer = renderer
        self.json_lines = json_lines
        self.limit = limit

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        # The renderer may consume the dict (the console one pops): keep what a stand-in needs.
        essentials = [(key, event_dict[key]) for key in _ESSENTIALS if key in event_dict]
        line = self.renderer(logger, method, event_dict)
        text = line if isinstance(line, str) else str(line)
        if len(text) <= self.limit:
            return text
        if not self.json_lines:
            return truncate(text, self.limit)
        stand_in = {key: truncate(str(value), 200) for key, value in essentials}
        stand_in["log_line_cut"] = f"{len(text)} chars > {self.limit}"
        return json.dumps(stand_in, ensure_ascii=False)
