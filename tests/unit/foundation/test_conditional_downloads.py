"""``Range`` and ``If-None-Match`` arithmetic (RFC 9110 §13, §14), as a table and as a
property: any satisfiable single range selects bytes inside the file, exactly those asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.api.conditional import ByteRange, not_modified, requested_range
from keel.errors import RangeNotSatisfiable

ETAG = '"abc"'


@pytest.mark.parametrize(
    ("header", "if_range", "size", "expected"),
    [
        (None, None, 100, None),
        ("bytes=0-9", None, 100, ByteRange(0, 10)),
        ("bytes=90-", None, 100, ByteRange(90, 10)),
        ("bytes=-10", None, 100, ByteRange(90, 10)),
        ("bytes=-500", None, 100, ByteRange(0, 100)),
        ("bytes=50-5000", None, 100, ByteRange(50, 50)),
        (" bytes=1-1 ", None, 100, ByteRange(1, 1)),
        ("bytes=0-1,4-5", None, 100, None),  # multi-range: ignored
        ("bytes=5-1", None, 100, None),  # invalid: ignored
        ("bytes=-", None, 100, None),
        ("chunks=0-1", None, 100, None),
        ("bytes=0-1", ETAG, 100, ByteRange(0, 2)),
        ("bytes=0-1", '"other"', 100, None),  # If-Range with another validator: whole file
        ("bytes=0-1", f"W/{ETAG}", 100, None),  # If-Range compares strongly
    ],
)
def test_requested_range(
    header: str | None, if_range: str | None, size: int, expected: ByteRange | None
) -> None:
    assert requested_range(header, if_range, ETAG, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges_raise_416_with_the_size(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        requested_range(header, None, ETAG, size)
    assert raised.value.status == 416
    assert raised.value.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ('"x"', False),
    ],
)
def test_not_modified(header: str | None, expected: bool) -> None:
    assert not_modified(header, ETAG) is expected


@given(size=st.integers(1, 10_000), first=st.integers(0, 20_000), span=st.integers(0, 20_000))
def test_a_satisfiable_range_lies_inside_the_file(size: int, first: int, span: int) -> None:
    header = f"bytes={first}-{first + span}"
    if first >= size:
        with pytest.raises(RangeNotSatisfiable):
            requested_range(header, None, ETAG, size)
        return
    chosen = requested_range(header, None, ETAG, size)
    assert chosen is not None
    assert chosen.start == first
    assert chosen.last == min(first + span, size - 1)
    assert chosen.content_range(size) == f"bytes {first}-{chosen.last}/{size}"
