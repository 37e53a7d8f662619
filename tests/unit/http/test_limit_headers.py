"""The rate-limit fields are set on a response start exactly as ``MutableHeaders`` would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import MutableHeaders
from starlette.types import Message

from keel.http.limits import add_headers

NAMES = st.sampled_from(["RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "Retry-After"])
VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)
EXISTING = st.lists(
    st.tuples(
        st.sampled_from([b"content-type", b"ratelimit", b"retry-after", b"location"]),
        VALUES.map(lambda value: value.encode("latin-1")),
    ),
    max_size=5,
)


def start(headers: list[tuple[bytes, bytes]]) -> Message:
    return {"type": "http.response.start", "status": 201, "headers": list(headers)}


@given(existing=EXISTING, added=st.dictionaries(NAMES, VALUES, max_size=4))
def test_the_fields_end_as_mutable_headers_would_leave_them(
    existing: list[tuple[bytes, bytes]], added: dict[str, str]
) -> None:
    expected = start(existing)
    fields = MutableHeaders(scope=expected)
    for name, value in added.items():
        fields[name] = value
    message = start(existing)
    add_headers(message, added)
    assert message["headers"] == expected["headers"]


def test_new_fields_are_appended_in_order() -> None:
    message = start([(b"content-type", b"application/json")])
    add_headers(message, {"RateLimit-Policy": '"api-user";q=600;w=60', "RateLimit": "r"})
    assert message["headers"] == [
        (b"content-type", b"application/json"),
        (b"ratelimit-policy", b'"api-user";q=600;w=60'),
        (b"ratelimit", b"r"),
    ]
