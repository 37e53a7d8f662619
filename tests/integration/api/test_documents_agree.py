"""The README, the OpenAPI document and the server say the same thing.

Each test reads one claim from a document and checks the server keeps it: the
problem types and their statuses, the statuses the README promises for malformed
requests, ``Idempotency-Key`` (required where the settings require it, with the
pattern the server enforces), the audit codes, ``/health?verbose``, ``traceparent``
on every response, and ``/docs`` working without a network.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from tests.support.app import World, app_for, make_settings, running

from keel.audit import EventCode
from keel.errors import KeelError
from keel.guard.idempotency.keys import KEY_PATTERN
from keel.http import problems
from keel.settings import Settings

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
PROBLEM = "application/problem+json"
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]$")


def _server_problem_statuses() -> dict[str, int]:
    statuses = {slug: status for status, (slug, _) in problems._HTTP_SLUGS.items()}
    statuses["internal"] = 500
    pending: list[type[KeelError]] = [KeelError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        slug = getattr(cls, "slug", None)
        if isinstance(slug, str) and cls is not KeelError:
            statuses.setdefault(slug, int(cls.status))
    return statuses


def _readme_problem_table() -> dict[str, int]:
    rows: dict[str, int] = {}
    start = README.index("| problem `type`")
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for slug in re.findall(r"`([a-z-]+)`", cells[0]):
            rows[slug] = int(cells[1])
    return rows


def test_every_problem_type_in_the_readme_has_the_status_the_server_gives_it() -> None:
    documented = _readme_problem_table()
    server = _server_problem_statuses()
    assert len(documented) >= 15
    assert {slug: server.get(slug) for slug in documented} == documented


async def test_malformed_requests_answer_what_the_readme_says(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    headers = world.alice.headers
    schema = app.openapi()
    cases = [
        # (request, README's status, problem type)
        (("POST", "/v1/recognitions", b"{not json", "application/json"), 400, "bad-request"),
        (("POST", "/v1/exports", b"[", "application/json"), 400, "bad-request"),
        (("POST", "/v1/evidence", b"", None), 415, "unsupported-media-type"),
        (("POST", "/v1/evidence", b"{}", "application/json"), 415, "unsupported-media-type"),
        (
            (
                "POST",
                "/v1/evidence",
                b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b--\r\n',
                "multipart/form-data; boundary=b",
            ),
            400,
            "bad-request",
        ),
        (("GET", "/v1/recognitions?cursor=%21%21", b"", None), 400, "bad-request"),
    ]
    for (method, path, body, content_type), status, slug in cases:
        sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
        response = await client.request(method, path, content=body, headers=sent)
        assert (path, response.status_code) == (path, status), response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == problems.problem_type(slug)
        template = path.split("?")[0]
        assert str(status) in schema["paths"][template][method.lower()]["responses"]
    assert "`400` when the body is not JSON at all" in README
    assert "not `multipart/form-data` at all (or no body) is a `415`" in README


def _parameter(schema: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    for parameter in schema["paths"][path][method]["parameters"]:
        if parameter["name"] == name:
            return dict(parameter)
    raise AssertionError(f"{method} {path} documents no {name}")


async def test_idempotency_key_is_required_where_the_settings_require_it(
    settings: Settings, world: World
) -> None:
    required = make_settings(
        settings.database_url,
        str(settings.storage_dir),
        idempotency_required_routes=["POST /v1/recognitions", "POST /v1/exports"],
    )
    app = app_for(required)
    schema = app.openapi()
    for path, is_required in (
        ("/v1/recognitions", True),
        ("/v1/exports", True),
        ("/v1/evidence", False),
    ):
        parameter = _parameter(schema, path, "post", "Idempotency-Key")
        assert parameter["required"] is is_required, path
        assert parameter["schema"]["pattern"] == KEY_PATTERN
    async with running(app) as client:
        body = {"recipient_id": world.bob.id, "message": "thanks"}
        missing = await client.post("/v1/recognitions", json=body, headers=world.alice.headers)
        assert missing.status_code == 400
        assert missing.json()["type"] == problems.problem_type("idempotency-key-required")
        refused = await client.post(
            "/v1/recognitions",
            json=body,
            headers={**world.alice.headers, "Idempotency-Key": '"unterminated'},
        )
        assert re.fullmatch(KEY_PATTERN, '"unterminated') is None
        assert refused.status_code == 400
        kept = await client.post(
            "/v1/recognitions",
            json=body,
            headers={**world.alice.headers, "Idempotency-Key": '"a \\"quoted\\" key"'},
        )
        assert re.fullmatch(KEY_PATTERN, '"a \\"quoted\\" key"') is not None
        assert kept.status_code == 201


async def test_audit_codes_are_an_enum_of_the_registry(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    schema = app.openapi()
    codes = sorted(code.value for code in EventCode)
    event = schema["components"]["schemas"]["AuditEventOut"]["properties"]["code"]
    reference = event["$ref"].rsplit("/", 1)[-1]
    assert sorted(schema["components"]["schemas"][reference]["enum"]) == codes
    unknown = await client.get("/v1/audit?code=no.such.code", headers=world.admin.headers)
    assert unknown.status_code == 422
    page = await client.get("/v1/audit?code=token.created", headers=world.admin.headers)
    assert page.status_code == 200
    assert {item["code"] for item in page.json()["items"]} <= set(codes)


async def test_probes_answer_plain_text_with_verbose_as_the_readme_says(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/live", "/ready", "/health"):
        plain = await client.get(path + "?verbose")
        assert plain.headers["content-type"].startswith("text/plain"), path
        assert re.search(r"^\[[+-]\]\w+ ", plain.text, re.MULTILINE), path
        assert (await client.get(path)).headers["content-type"] == "application/health+json"
    unknown = await client.get("/ready?exclude=no-such-check")
    assert unknown.status_code == 422
    assert "unknown names answer `422`" in README
    assert "`?verbose` answers Kubernetes-style plain text" in README


async def test_every_response_carries_traceparent_and_a_request_id(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    @app.get("/v1/raise-for-the-test", include_in_schema=False)
    async def fails() -> None:
        raise RuntimeError("a bug, on purpose")

    answers = [
        await client.get(path)
        for path in ("/live", "/ready", "/health", "/metrics", "/version", "/openapi.json")
    ]
    answers.append(await client.get("/docs"))
    answers.append(await client.get("/no/such/path"))  # 404
    answers.append(await client.get("/v1/users/me"))  # 401, from authentication
    answers.append(await client.put("/v1/users/me", headers=world.alice.headers))  # 405
    answers.append(await client.get("/v1/users/me", headers=world.alice.headers))  # 200
    for _ in range(40):  # anon-ip: a 429 from the limits middleware
        refused = await client.get("/v1/users")
        if refused.status_code == 429:
            break
    assert refused.status_code == 429
    answers.append(refused)
    # a 500 is sent by Starlette's outermost error middleware, outside Keel's
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as raw:
        answers.append(await raw.get("/v1/raise-for-the-test", headers=world.alice.headers))
    assert answers[-1].status_code == 500
    for answer in answers:
        what = f"{answer.request.method} {answer.request.url.path} {answer.status_code}"
        assert TRACEPARENT.match(answer.headers.get("traceparent", "")), what
        assert answer.headers.get("x-request-id"), what
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for path in ("/live", "/v1/users/me"):
        followed = await client.get(path, headers={"traceparent": incoming, **world.bob.headers})
        assert followed.headers["traceparent"].split("-")[1] == incoming.split("-")[1], path


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_interactive_docs_load_nothing_from_another_host(
    client: httpx.AsyncClient, page: str
) -> None:
    html = await client.get(page)
    assert html.status_code == 200
    references = _References()
    references.feed(html.text)
    assert references.urls, "the page loads its script"
    assert not re.search(r"https?://", html.text), "an absolute URL: another host"
    for url in references.urls:
        assert not urlsplit(url).netloc, url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert "serves Swagger UI and ReDoc from the installed package" in README


def test_the_readme_names_make_runs_port_setting_and_the_demo_plan() -> None:
    makefile = (Path(__file__).resolve().parents[3] / "Makefile").read_text()
    assert "KEEL_PORT ?= 8000" in makefile
    assert "make run KEEL_PORT=" in README
    assert "`team` plan" in README


def test_every_status_the_readme_lists_for_a_route_is_in_the_openapi_document(
    app: FastAPI,
) -> None:
    schema = app.openapi()
    paths = {re.sub(r"\{[^}]+\}", "{}", path): path for path in schema["paths"]}
    start = README.index("| method and path | what it does |")
    checked = 0
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        routes_cell, said = line.strip("|").split("|", 1)
        statuses = re.findall(r"`([1-5]\d\d)`", said)
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`]+)`", routes_cell):
            template = paths[re.sub(r"\{[^}]+\}", "{}", path)]  # README says {id}
            responses = schema["paths"][template][method.lower()]["responses"]
            for status in statuses:
                assert status in responses, f"{method} {path}: README says {status}"
                checked += 1
    assert checked >= 6  # 201, 204 (twice), 202, 409, …
