"""A response the server could not send is replaced by a problem before it starts."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from keel.http.response_headers import ResponseHeaderCheck, unsendable_header


def app_sending(headers: list[tuple[bytes, bytes]]) -> ResponseHeaderCheck:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b"rest"})

    return ResponseHeaderCheck(app)


async def get(app: ResponseHeaderCheck) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get("/file")


@pytest.mark.parametrize(
    "header",
    [
        (b"content-disposition", b'attachment; filename="a\x00b"'),
        (b"x-name", b"line\r\nbreak"),
        (b"bad name", b"v"),
        (b"", b"v"),
    ],
)
async def test_an_unsendable_header_becomes_a_500_problem(header: tuple[bytes, bytes]) -> None:
    response = await get(app_sending([(b"content-type", b"text/plain"), header]))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "https://keel.dev/problems/internal"
    assert b"part" not in response.content


async def test_sendable_headers_pass_unchanged() -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-tab", b"a\tb"), (b"x-latin", b"caf\xe9")]
    response = await get(app_sending(headers))
    assert (response.status_code, response.content) == (200, b"partrest")
    assert response.headers["x-tab"] == "a\tb"


def test_unsendable_header_names_the_header_only() -> None:
    assert unsendable_header([(b"ok", b"1"), (b"x-secret", b"tok\x00en")]) == "x-secret"
