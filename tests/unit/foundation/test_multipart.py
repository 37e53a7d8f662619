"""The streaming multipart reader gives back the exact bytes, however the body is cut."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.api.multipart import MAX_FILENAME_CHARS, FileFieldReader
from keel.errors import BadRequest, InvalidInput, UnsupportedMediaType

BOUNDARY = "XyZ-boundary-123"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(
    payload: bytes, *, filename: str = "a.bin", field: str = "file", before: bytes = b""
) -> bytes:
    b = BOUNDARY.encode()
    head = b""
    if before:
        head = (
            b"--"
            + b
            + b'\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
            + before
            + b"\r\n"
        )
    return (
        head
        + b"--"
        + b
        + b"\r\n"
        + f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode()
        + b"Content-Type: image/png\r\n\r\n"
        + payload
        + b"\r\n--"
        + b
        + b"--\r\n"
    )


async def chunked(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        yield data[start:cut]
        start = cut
    yield data[start:]


async def read_all(data: bytes, cuts: list[int]) -> tuple[str, str, bytes]:
    reader = FileFieldReader(chunked(data, cuts), CONTENT_TYPE, "file")
    part = await reader.find()
    content = b"".join([c async for c in reader.chunks()])
    return part.filename, part.content_type, content


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    before=st.binary(max_size=200).filter(lambda b: BOUNDARY.encode() not in b),
    cut_fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=12),
)
def test_any_chunking_yields_the_exact_file(
    payload: bytes, before: bytes, cut_fractions: list[float]
) -> None:
    data = body(payload, before=before)
    cuts = [int(f * len(data)) for f in cut_fractions]
    filename, content_type, content = asyncio.run(read_all(data, cuts))
    assert (filename, content_type, content) == ("a.bin", "image/png", payload)


def test_path_components_are_stripped_from_filenames() -> None:
    data = body(b"x", filename="../../etc/passwd")
    assert asyncio.run(read_all(data, []))[0] == "passwd"


def test_a_body_without_the_field_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        asyncio.run(read_all(body(b"x", field="other"), []))


def test_a_truncated_body_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        asyncio.run(read_all(body(b"x" * 100)[:-60], []))


def test_non_multipart_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType):
        FileFieldReader(chunked(b"", []), "application/json", "file")


@settings(max_examples=200, deadline=None)
@given(
    headers=st.binary(max_size=300),
    payload=st.binary(max_size=300),
    cut=st.integers(min_value=0, max_value=800),
)
def test_arbitrary_part_headers_are_a_file_or_a_bad_request(
    headers: bytes, payload: bytes, cut: int
) -> None:
    b = BOUNDARY.encode()
    data = b"--" + b + b"\r\n" + headers + b"\r\n\r\n" + payload + b"\r\n--" + b + b"--\r\n"
    with contextlib.suppress(BadRequest, InvalidInput):  # anything else (a crash) fails the test
        asyncio.run(read_all(data, [min(cut, len(data))]))


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=30), filename=st.text(max_size=30))
def test_non_ascii_field_and_file_names_never_crash(name: str, filename: str) -> None:
    b = BOUNDARY.encode()
    disposition = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode()
    data = b"--" + b + b"\r\n" + disposition + b"\r\n\r\nabc\r\n--" + b + b"--\r\n"
    with contextlib.suppress(BadRequest, InvalidInput):
        asyncio.run(read_all(data, []))


def raw_body(filename: bytes) -> bytes:
    b = BOUNDARY.encode()
    return (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: image/png\r\n\r\nabc\r\n--'
        + b
        + b"--\r\n"
    )


@pytest.mark.parametrize(
    "filename",
    [
        b"a\x00b.png",  # NUL: PostgreSQL cannot store it, no header can carry it
        b"bell\x07.png",
        b"tab\t.png",
        b"c1\xc2\x85.png",  # U+0085, a C1 control
        b"\xff\xfe.png",  # not UTF-8
        b"\xed\xa0\x80.png",  # a UTF-8-encoded surrogate is not UTF-8 either
        b"x" * (MAX_FILENAME_CHARS + 1),
    ],
)
def test_filenames_a_database_or_a_header_cannot_take_are_refused(filename: bytes) -> None:
    with pytest.raises(InvalidInput) as raised:
        asyncio.run(read_all(raw_body(filename), []))
    assert raised.value.extensions["errors"][0]["field"] == "file.filename"


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("résumé 2026.pdf".encode(), "résumé 2026.pdf"),
        ("日本語.png".encode(), "日本語.png"),
        (b"x" * MAX_FILENAME_CHARS, "x" * MAX_FILENAME_CHARS),
        (b"C:\\Users\\me\\a.png", "a.png"),
        (b"", "upload"),
    ],
)
def test_acceptable_filenames_are_kept_exactly(filename: bytes, stored: str) -> None:
    assert asyncio.run(read_all(raw_body(filename), []))[0] == stored


def test_a_filename_bigger_than_the_header_bound_is_refused_while_it_arrives() -> None:
    data = raw_body(b"x" * 1_000_000)
    with pytest.raises(BadRequest, match="malformed multipart"):
        asyncio.run(read_all(data, list(range(0, len(data), 4096))))
