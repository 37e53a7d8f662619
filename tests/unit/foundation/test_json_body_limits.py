"""JSON bodies are bounded in size and nesting before anything parses them deeply."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from keel.errors import BadRequest, InvalidInput
from keel.guard.idempotency.fingerprints import canonical_json
from keel.http.json_body import MAX_JSON_DEPTH, JsonBodyLimits, check_json, nesting_exceeds

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=3)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300)
@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=8))
def test_the_scan_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    # Brackets, quotes and backslashes inside strings are text, not structure.
    body = json.dumps(value).encode()
    assert nesting_exceeds(body, limit) == (depth(value) > limit)


def test_a_hundred_thousand_levels_are_refused_without_recursion() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    assert nesting_exceeds(body, MAX_JSON_DEPTH)
    with pytest.raises(InvalidInput) as raised:
        check_json(body)
    assert raised.value.extensions["errors"][0]["code"] == "json_too_deep"


def test_the_limit_itself_is_accepted() -> None:
    check_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    with pytest.raises(InvalidInput):
        check_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"a": }',
        b"\xff\xfe{}",
        b'{"n": ' + b"9" * 5000 + b"}",  # more digits than Python converts
        b'"unterminated',
    ],
)
def test_every_malformed_body_is_the_same_json_invalid_problem(body: bytes) -> None:
    with pytest.raises(BadRequest) as raised:
        check_json(body)
    assert raised.value.status == 400
    assert raised.value.extensions["errors"][0]["code"] == "json_invalid"


def test_huge_numbers_that_parse_are_left_to_the_fields() -> None:
    check_json(b'{"n": 1e400, "m": ' + b"1" + b"0" * 100 + b"}")


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def client(max_bytes: int = 1024) -> httpx.AsyncClient:
    app = JsonBodyLimits(_echo, max_bytes=max_bytes, max_depth=4)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


JSON = {"content-type": "application/json"}


async def test_an_acceptable_body_reaches_the_app_unchanged() -> None:
    async with client() as http:
        response = await http.post("/", content=b'{"a": [[1]]}', headers=JSON)
    assert (response.status_code, response.content) == (200, b'{"a": [[1]]}')


async def test_too_deep_bodies_are_422_and_malformed_ones_400_problems() -> None:
    async with client() as http:
        deep = await http.post("/x", content=b"[[[[[1]]]]]", headers=JSON)
        broken = await http.post("/x", content=b"{", headers=JSON)
    for response, status, slug in ((deep, 422, "validation"), (broken, 400, "bad-request")):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == f"https://keel.dev/problems/{slug}"
        assert response.json()["instance"] == "/x"


async def test_an_oversized_body_is_refused_declared_or_streamed() -> None:
    async def stream() -> Any:
        for _ in range(10):
            yield b" " * 200

    async with client(max_bytes=1024) as http:
        declared = await http.post("/", content=b" " * 2000 + b"{}", headers=JSON)
        streamed = await http.post("/", content=stream(), headers=JSON)
    assert declared.status_code == streamed.status_code == 413
    assert declared.json()["limit"] == 1024


async def test_other_media_types_pass_through_untouched() -> None:
    async with client(max_bytes=10) as http:
        response = await http.post("/", content=b"[" * 100, headers={"content-type": "text/plain"})
    assert (response.status_code, response.content) == (200, b"[" * 100)


@pytest.mark.parametrize("body", [b'{"m": "\\ud800"}', b"[" * 100_000, b"9" * 5000])
def test_the_idempotency_fingerprint_never_fails_on_a_body_the_route_refuses(body: bytes) -> None:
    # Such a body counts by its raw bytes (it used to raise, and answer 500).
    assert canonical_json(body) is None
    assert canonical_json(b'{"b": 1, "a": "\\u00e9"}') == '{"a":"é","b":1}'.encode()
