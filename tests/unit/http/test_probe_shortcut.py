"""A plain ``GET`` of a probe is answered before the later steps; anything else passes on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from keel.http.probes import OperationalShortcut
from keel.http.state import peek


class Downstream:
    """Stands in for shedding, authentication, the limits and the router."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await PlainTextResponse("downstream")(scope, receive, send)


async def _get(url: str, method: str = "GET") -> tuple[httpx.Response, Downstream, list[Any]]:
    downstream = Downstream()
    templates: list[Any] = []

    async def live() -> Response:
        return PlainTextResponse("alive", headers={"Cache-Control": "max-age=0"})

    shortcut = OperationalShortcut(downstream, answers={"/live": live})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await shortcut(scope, receive, send)
        state = peek(scope)
        templates.append(state.template if state is not None else None)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        response = await client.request(method, url)
    return response, downstream, templates


async def test_a_plain_get_of_a_probe_is_answered_here_and_labelled_by_its_path() -> None:
    response, downstream, templates = await _get("/live")
    assert (response.status_code, response.text) == (200, "alive")
    assert response.headers["cache-control"] == "max-age=0"
    assert downstream.paths == []
    assert templates == ["/live"]  # the metrics and the access line label it as the route


@pytest.mark.parametrize(
    ("url", "method"),
    [("/live?verbose", "GET"), ("/live", "HEAD"), ("/live", "POST"), ("/v1/live", "GET")],
)
async def test_a_query_another_method_or_another_path_goes_down_the_pipeline(
    url: str, method: str
) -> None:
    response, downstream, templates = await _get(url, method)
    assert downstream.paths == [url.split("?", maxsplit=1)[0]]
    assert templates == [None]
    assert response.status_code == 200
