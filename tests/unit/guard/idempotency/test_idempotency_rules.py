"""Key syntax, fingerprints and the key state machine: pure rules, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.guard.idempotency import (
    TRANSITIONS,
    IdempotencyKeyInvalid,
    KeyState,
    Transition,
    canonical_json,
    fingerprint,
    key_from_headers,
    parse_key,
)
from keel.guard.idempotency.fingerprints import streaming_hasher

OP = "POST /v1/recognitions"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (b'"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (b'"with \\"quote\\" and \\\\"', 'with "quote" and \\'),
        (b"  padded  ", "padded"),
        (b"a", "a"),
        (b"k" * 255, "k" * 255),
        (b"spaces inside ok", "spaces inside ok"),
        (b"~!@#$%^&*()", "~!@#$%^&*()"),
    ],
)
def test_valid_keys(raw: bytes, key: str) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"k" * 256,
        b'"' + b"k" * 256 + b'"',
        "caf\u00e9".encode(),
        b"a\x00b",
        b"a\x7fb",
        b"tab\tinside",
        b'"open',
        b'"bad \\n escape"',
        b'"inner " quote"',
        b'""',
        b"\xff",
    ],
)
def test_invalid_keys(raw: bytes) -> None:
    with pytest.raises(IdempotencyKeyInvalid) as caught:
        parse_key(raw)
    assert caught.value.status == 400
    assert caught.value.slug == "idempotency-key-invalid"


@pytest.mark.parametrize("code", range(128))
def test_a_key_may_hold_exactly_the_printable_ascii_characters(code: int) -> None:
    raw = b"a" + bytes([code]) + b"b"
    if 0x20 <= code <= 0x7E:
        assert parse_key(raw) == raw.decode()
    else:
        with pytest.raises(IdempotencyKeyInvalid):
            parse_key(raw)


def test_header_lookup_is_case_insensitive_and_refuses_duplicates() -> None:
    assert key_from_headers([(b"Idempotency-Key", b"x")]) == "x"
    assert key_from_headers([(b"other", b"x")]) is None
    with pytest.raises(IdempotencyKeyInvalid):
        key_from_headers([(b"idempotency-key", b"x"), (b"idempotency-key", b"x")])


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255
    )
)
def test_any_printable_key_round_trips_through_its_sf_string_form(key: str) -> None:
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert parse_key(quoted.encode()) == key
    if not key.startswith('"'):  # a bare value opening with a quote is read as an sf-string
        assert parse_key(key.encode()) == key


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(_json)
def test_json_fingerprints_ignore_key_order_and_whitespace(document: object) -> None:
    compact = json.dumps(document, separators=(",", ":")).encode()
    spaced = json.dumps(document, indent=3, sort_keys=True).encode()
    assert canonical_json(compact) == canonical_json(spaced)
    assert fingerprint(OP, compact, "application/json") == fingerprint(
        OP, spaced, "application/json; charset=utf-8"
    )


def test_fingerprints_tell_bodies_routes_and_forms_apart() -> None:
    body = b'{"message": "hi"}'
    assert fingerprint(OP, body, "application/json") != fingerprint(
        OP, b'{"message": "ho"}', "application/json"
    )
    assert fingerprint(OP, body, "application/json") != fingerprint(
        "POST /v1/exports", body, "application/json"
    )
    assert fingerprint(OP, body, "application/json") != fingerprint(OP, body, "text/plain")
    assert fingerprint(OP, b"{not json", "application/json") == fingerprint(
        OP, b"{not json", "text/plain"
    )


def _multipart(boundary: bytes, content: bytes, filename: bytes = b"a.bin") -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        + content
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def _streamed(body: bytes, boundary: bytes, chunk: int) -> str:
    hasher = streaming_hasher(
        "POST /v1/evidence", f"multipart/form-data; boundary={boundary.decode()}"
    )
    for start in range(0, len(body), chunk):
        hasher.update(body[start : start + chunk])
    return hasher.finish()


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700))
def test_multipart_fingerprints_ignore_the_boundary_and_chunking(
    content: bytes, chunk: int
) -> None:
    one = _streamed(_multipart(b"boundary-one", content), b"boundary-one", chunk)
    other = _streamed(_multipart(b"Xx-2-xX", content), b"Xx-2-xX", 4096)
    assert one == other
    assert one != _streamed(_multipart(b"Xx-2-xX", content + b"!"), b"Xx-2-xX", 4096)
    assert one != _streamed(_multipart(b"Xx-2-xX", content, b"b.bin"), b"Xx-2-xX", 4096)


def test_a_body_that_is_not_multipart_counts_by_its_raw_bytes() -> None:
    broken = b"no boundary here at all"
    assert _streamed(broken, b"zz", 5) == _streamed(broken, b"zz", 50)
    assert _streamed(broken, b"zz", 5) != _streamed(broken + b"!", b"zz", 5)


def test_the_state_machine_has_one_way_into_and_out_of_each_state() -> None:
    assert TRANSITIONS[Transition.CLAIM] == (None, KeyState.IN_FLIGHT)
    assert TRANSITIONS[Transition.COMPLETE] == (KeyState.IN_FLIGHT, KeyState.COMPLETED)
    # A stored outcome is never released: only purged (or reclaimed) after retention.
    leaving_completed = {t for t, (src, _) in TRANSITIONS.items() if src is KeyState.COMPLETED}
    assert leaving_completed == {Transition.PURGE, Transition.RECLAIM}
