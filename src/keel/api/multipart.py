"""Streaming multipart/form-data: the ``file`` field's bytes as they arrive.

Starlette's form parser spools a whole upload to a temporary file before the
handler runs, so a size limit could only be checked after the bytes were
received and written. Here python-multipart's push parser is fed the request
body chunk by chunk and the file part is handed on in the same rhythm, so the
caller can stop reading — and store nothing — the moment a limit is passed.

The filename is client text that later goes into a ``Content-Disposition``
header and a database row, so it is refused (422) unless it is valid UTF-8,
one line of :data:`~keel.api.text.Line` text and at most
:data:`MAX_FILENAME_CHARS` long. A huge filename never gets that far:
python-multipart bounds every part header line (about 4 KiB), a 400.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from keel.api.text import refusal
from keel.errors import BadRequest, InvalidInput, UnsupportedMediaType

MAX_FILENAME_CHARS = 255
"""What common filesystems allow; a longer name is refused, not cut."""


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    data: list[bytes] = field(default_factory=list)
    headers_done: bool = False
    done: bool = False


@dataclass(frozen=True, slots=True)
class FilePart:
    filename: str
    content_type: str


class _Collector:
    """Receives the parser's callbacks and queues what they produced."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self._field = b""
        self._value = b""

    @property
    def current(self) -> _Part:
        return self.parts[-1]

    def on_part_begin(self) -> None:
        self.parts.append(_Part())

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        name = self._field.decode("latin-1").lower()
        self.current.headers[name] = self._value
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        self.current.headers_done = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.current.data.append(bytes(data[start:end]))

    def on_part_end(self) -> None:
        self.current.done = True


def _refuse_filename(message: str) -> InvalidInput:
    return InvalidInput(
        f"the file's name is not acceptable: {message}",
        errors=[{"field": "file.filename", "message": message, "code": "filename_invalid"}],
    )


def checked_filename(raw: bytes) -> str:
    """The filename to store: its last path component, or :class:`InvalidInput`.

    Directory parts are dropped (old browsers send a full path); everything
    else is kept exactly or refused — never silently rewritten or cut.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse_filename("it is not valid UTF-8") from None
    reason = refusal(text, multiline=False)
    if reason is not None:
        raise _refuse_filename(reason)
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    if len(name) > MAX_FILENAME_CHARS:
        raise _refuse_filename(f"it is longer than {MAX_FILENAME_CHARS} characters")
    return name or "upload"


def boundary_of(content_type: str | None) -> bytes:
    media_type, options = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType("send the file as multipart/form-data with a field named 'file'")
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    return boundary


class FileFieldReader:
    """Finds the first part named ``field_name`` that carries a filename."""

    def __init__(self, body: AsyncIterator[bytes], content_type: str | None, field_name: str):
        self._body = body
        self._field_name = field_name
        self._collector = _Collector()
        callbacks = {
            name: getattr(self._collector, name)
            for name in (
                "on_part_begin",
                "on_header_field",
                "on_header_value",
                "on_header_end",
                "on_headers_finished",
                "on_part_data",
                "on_part_end",
            )
        }
        self._parser = MultipartParser(boundary_of(content_type), callbacks)  # type: ignore[arg-type]
        self._target: _Part | None = None
        self._exhausted = False

    async def _feed(self) -> bool:
        if self._exhausted:
            return False
        try:
            chunk = await anext(self._body)
        except StopAsyncIteration:
            self._exhausted = True
            try:
                self._parser.finalize()
            except MultipartParseError as error:
                raise BadRequest(f"malformed multipart body: {error}") from error
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            raise BadRequest(f"malformed multipart body: {error}") from error
        return True

    def _match(self, part: _Part) -> FilePart | None:
        disposition = part.headers.get("content-disposition")
        if disposition is None:
            return None
        _, options = parse_options_header(disposition)
        if options.get(b"name", b"") != self._field_name.encode():
            return None
        filename = options.get(b"filename")
        if filename is None:
            return None
        media_type = part.headers.get("content-type", b"application/octet-stream")
        media = parse_options_header(media_type)[0].decode("latin-1").lower()
        return FilePart(filename=checked_filename(filename), content_type=media)

    async def find(self) -> FilePart:
        """Read until the file part's headers are known (its data may follow)."""
        parts = self._collector.parts
        while True:
            while parts and parts[0].headers_done:
                part = parts[0]
                found = self._match(part)
                if found is not None:
                    self._target = part
                    return found
                if not part.done:
                    part.data.clear()  # another field still arriving: keep none of it
                    break
                parts.pop(0)
            if not await self._feed():
                raise BadRequest(f"no file in multipart field '{self._field_name}'")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes, as they arrive."""
        if self._target is None:
            raise RuntimeError("find() first")
        part = self._target
        while True:
            if part.data:
                pending, part.data = part.data, []
                for chunk in pending:
                    if chunk:
                        yield chunk
            if part.done:
                return
            if not await self._feed():
                raise BadRequest("the multipart body ended inside the file")

    async def finish(self) -> None:
        """Read the rest of the body (the closing boundary), checking it parses."""
        while await self._feed():
            pass
