"""Bad input against real ``keel serve`` processes, on SQLite and on PostgreSQL.

Every operation and every field is taken from the server's own OpenAPI document,
so a new route or field is attacked without anyone adding it here: NUL, unpaired
surrogates, control characters, overlong strings, 100,000 levels of nesting,
wrong types, huge numbers and broken multipart. Each must answer a 4xx
``application/problem+json`` — never a 5xx, never a dropped connection — with the
same status and problem type on both databases, while a probe thread shows
``/live`` answering in under 100 ms throughout (issue 14).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app import World, seeded_world
from tests.support.databases import Templates, fresh_database
from tests.support.policies import generous_policy
from tests.support.processes import keel_server, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PROBLEM = "application/problem+json"
LIVE_BUDGET_SECONDS = 0.100
# A server answers bad input in milliseconds; these bound a run against one that hangs.
REQUEST_TIMEOUT_SECONDS = 5.0
ATTACK_BUDGET_SECONDS = 60.0
DEEP = b"[" * 100_000 + b"]" * 100_000


@dataclass(frozen=True)
class Case:
    """One hostile request. ``refused``: it must be a 4xx problem (else only: no 5xx)."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    refused: bool = True
    documented: frozenset[str] = frozenset()  # the statuses the OpenAPI lists for it

    @property
    def must_refuse(self) -> bool:
        # The probes (/live, /ready, /health) ignore query values they cannot use, so
        # a probe never fails on noise; they are held to "no 5xx, same everywhere".
        return self.refused and self.path.startswith("/v1/")


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the connection dropped or timed out
    content_type: str
    problem_type: str | None
    error: str = ""


@dataclass
class Run:
    answers: dict[str, Answer] = field(default_factory=dict)
    live_latencies: list[float] = field(default_factory=list)
    live_failures: list[str] = field(default_factory=list)


# --- the attacks ----------------------------------------------------------------

# Percent-encoded text for URLs: (name, value, refused?). An invalid UTF-8 escape is
# decoded to U+FFFD by the server — harmless text — so it need not be refused.
URL_TEXT = [
    ("nul", "%00", True),
    ("nul-inside", "ab%00cd", True),
    ("bell", "a%07b", True),
    ("crlf", "a%0D%0Ab", True),
    ("c1", "a%C2%85b", True),
    ("escape", "%1B%5B31m", True),
    ("overlong", "x" * 5000, True),
    ("utf8-surrogate", "%ED%A0%80", False),
    ("invalid-utf8", "%FF%FE", False),
]
URL_NUMBER = [
    ("word", "abc"),
    ("inf", "1e400"),
    ("googol", "1" + "0" * 100),
    ("negative", "-1"),
    ("fraction", "1.5"),
    ("nul", "%00"),
    ("empty", ""),
]
URL_DATETIME = [("number", "0.5"), ("inf", "1e400"), ("no-offset", "2026-01-01T00:00:00")]

# Raw JSON texts for a field's value.
JSON_TEXT = [
    ("nul", b'"\\u0000"'),
    ("nul-inside", b'"ab\\u0000cd"'),
    ("surrogate", b'"\\ud800"'),
    ("low-surrogate", b'"x\\udfff"'),
    ("reversed-pair", b'"\\udc00\\ud800"'),
    ("bell", b'"a\\u0007b"'),
    ("c1", b'"a\\u009bb"'),
    ("delete", b'"a\\u007fb"'),
    ("overlong", b'"' + b"x" * 5000 + b'"'),
    ("very-overlong", b'"' + b"x" * 200_000 + b'"'),
]
JSON_OTHER = [
    ("inf", b"1e400"),
    ("googol", b"1" + b"0" * 100),
    ("too-many-digits", b"9" * 5000),
    ("true", b"true"),
    ("object", b"{}"),
    ("deep", b"[" * 100 + b"]" * 100),
    ("very-deep", DEEP),
]
JSON_BODIES = [
    ("empty", b""),
    ("truncated", b'{"a": '),
    ("array", b"[]"),
    ("string", b'"x"'),
    ("invalid-utf8", b"\xff\xfe{}"),
    ("nul-key", b'{"\\u0000": 1}'),
    ("surrogate-key", b'{"\\ud800": 1}'),
    ("deep-object", b'{"a":' * 40 + b"1" + b"}" * 40),
    ("very-deep", DEEP),
]


def _schema_of(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        resolved: dict[str, Any] = document
        for part in ref.removeprefix("#/").split("/"):
            resolved = resolved[part]
        return resolved
    return schema


def _kind(schema: dict[str, Any]) -> str:
    """'integer', 'datetime', 'array' or 'string' for a parameter's or property's schema."""
    text = repr(schema)
    if "'integer'" in text or "'number'" in text:
        return "integer"
    if "date-time" in text:
        return "datetime"
    if "'array'" in text:
        return "array"
    return "string"


def _valid_value(name: str, schema: dict[str, Any], world: World) -> Any:
    enum = schema.get("enum") or next(
        (option["enum"] for option in schema.get("anyOf", []) if "enum" in option), None
    )
    if enum:
        return enum[0]
    kind = _kind(schema)
    if kind == "array":
        return []
    if kind == "integer":
        return 1
    return world.bob.id if name.endswith("_id") else "fine"


def url_cases(document: dict[str, Any]) -> Iterator[Case]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            placeholders = {p["name"]: str(uuid.uuid4()) for p in parameters if p["in"] == "path"}
            concrete = path.format(**placeholders)
            for parameter in parameters:
                name, where = parameter["name"], parameter["in"]
                if where not in ("path", "query"):
                    continue
                kind = _kind(parameter.get("schema", {}))
                attacks: list[tuple[str, str, bool]] = list(URL_TEXT)
                if kind == "integer":
                    attacks = [(label, value, True) for label, value in URL_NUMBER]
                elif kind == "datetime":
                    attacks += [(label, value, True) for label, value in URL_DATETIME]
                for label, value, refused in attacks:
                    if where == "path":
                        if not value:
                            continue
                        target = path.format(**{**placeholders, name: value})
                    else:
                        target = f"{concrete}?{name}={value}"
                    yield Case(
                        f"{method.upper()} {path} {where}.{name}={label}",
                        method.upper(),
                        target,
                        refused=refused,
                        documented=frozenset(operation["responses"]),
                    )


def _json_body(fields: dict[str, bytes]) -> bytes:
    return b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in fields.items()) + b"}"


def json_cases(document: dict[str, Any], world: World) -> Iterator[Case]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content or "{" in path:
                continue
            schema = _schema_of(document, content["application/json"]["schema"])
            properties = schema.get("properties", {})
            valid = {
                name: json.dumps(_valid_value(name, _schema_of(document, prop), world)).encode()
                for name, prop in properties.items()
            }
            label_base = f"{method.upper()} {path}"
            documented = frozenset(operation["responses"])
            for name, prop in properties.items():
                kind = _kind(_schema_of(document, prop))
                attacks = list(JSON_TEXT) + list(JSON_OTHER)
                if kind == "array":
                    attacks += [(f"[{label}]", b"[" + value + b"]") for label, value in JSON_TEXT]
                    attacks += [("too-many", b"[" + b",".join([b'"x"'] * 1000) + b"]")]
                for label, value in attacks:
                    yield Case(
                        f"{label_base} body.{name}={label}",
                        method.upper(),
                        path,
                        _json_body({**valid, name: value}),
                        "application/json",
                        documented=documented,
                    )
            for label, body in JSON_BODIES:
                yield Case(
                    f"{label_base} body={label}",
                    method.upper(),
                    path,
                    body,
                    "application/json",
                    documented=documented,
                )
            yield Case(
                f"{label_base} wrong-content-type",
                method.upper(),
                path,
                _json_body(valid),
                "text/plain",
                documented=documented,
            )


def _part(filename: bytes, content_type: bytes = b"application/octet-stream") -> bytes:
    return (
        b'--bb\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: '
        + content_type
        + b"\r\n\r\nabc\r\n--bb--\r\n"
    )


MULTIPART = [
    ("no-boundary", "multipart/form-data", _part(b"a.txt")),
    ("truncated", "multipart/form-data; boundary=bb", _part(b"a.txt")[:-20]),
    ("empty", "multipart/form-data; boundary=bb", b""),
    (
        "missing-file-part",
        "multipart/form-data; boundary=bb",
        b'--bb\r\nContent-Disposition: form-data; name="note"\r\n\r\nabc\r\n--bb--\r\n',
    ),
    ("nul-filename", "multipart/form-data; boundary=bb", _part(b"a\x00b.txt")),
    ("crlf-filename", "multipart/form-data; boundary=bb", _part(b"a\r\nb.txt")),
    ("bell-filename", "multipart/form-data; boundary=bb", _part(b"a\x07b.txt")),
    ("surrogate-filename", "multipart/form-data; boundary=bb", _part(b"a\xed\xa0\x80.txt")),
    ("latin1-filename", "multipart/form-data; boundary=bb", _part(b"caf\xe9.txt")),
    ("long-filename", "multipart/form-data; boundary=bb", _part(b"x" * 300)),
    ("huge-filename", "multipart/form-data; boundary=bb", _part(b"x" * 100_000)),
    ("refused-type", "multipart/form-data; boundary=bb", _part(b"a.exe", b"application/x-evil")),
    ("not-multipart", "text/plain", b"abc"),
    ("json-instead", "application/json", b'{"file": "abc"}'),
]


def multipart_cases(document: dict[str, Any]) -> Iterator[Case]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
                for label, content_type, body in MULTIPART:
                    yield Case(
                        f"{method.upper()} {path} multipart={label}",
                        method.upper(),
                        path,
                        body,
                        content_type,
                        documented=frozenset(operation["responses"]),
                    )


def all_cases(document: dict[str, Any], world: World) -> list[Case]:
    cases = [*url_cases(document), *json_cases(document, world), *multipart_cases(document)]
    assert len({case.name for case in cases}) == len(cases)
    return cases


# --- running them -----------------------------------------------------------------


def probe_live(base: str, stop: threading.Event, run: Run) -> None:
    """GET /live every 20 ms until told to stop (at most 3,000 probes)."""
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        for _ in range(3000):
            if stop.is_set():
                return
            started = time.perf_counter()
            try:
                response = client.get("/live")
                if response.status_code != 200:
                    run.live_failures.append(f"status {response.status_code}")
            except httpx.HTTPError as error:
                run.live_failures.append(type(error).__name__)
            run.live_latencies.append(time.perf_counter() - started)
            time.sleep(0.02)


def send(client: httpx.Client, case: Case, token: str) -> Answer:
    headers = {"Authorization": f"Bearer {token}"}
    if case.method == "POST":
        # Keyed, as production requires: the idempotency fingerprint reads the body too.
        headers["Idempotency-Key"] = str(uuid.uuid4())
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    try:
        response = client.request(case.method, case.path, content=case.body, headers=headers)
    except httpx.HTTPError as error:
        return Answer(None, "", None, f"{type(error).__name__}: {error}")
    content_type = response.headers.get("content-type", "")
    problem = None
    if content_type == PROBLEM:
        with contextlib.suppress(ValueError):
            problem = response.json().get("type")
    return Answer(response.status_code, content_type, problem)


def attack(backend: str, templates: Templates, workdir: Path) -> tuple[Run, list[Case]]:
    workdir.mkdir(parents=True, exist_ok=True)
    with fresh_database(templates, backend, workdir) as url:
        world = seeded_world(url)
        env = server_env(
            url,
            workdir,
            {
                "KEEL_RATELIMIT_POLICY": str(generous_policy(workdir)),
                "KEEL_INPROCESS_WORKER": "off",
            },
        )
        with keel_server(env, workdir) as server:
            document = httpx.get(server.url + "/openapi.json", timeout=30).json()
            cases = all_cases(document, world)
            run = Run()
            stop = threading.Event()
            prober = threading.Thread(target=probe_live, args=(server.url, stop, run))
            prober.start()
            try:
                # No keep-alive: a refused upload may close its connection, and the
                # next case must not be blamed for that.
                limits = httpx.Limits(max_keepalive_connections=0)
                deadline = time.monotonic() + ATTACK_BUDGET_SECONDS
                with httpx.Client(
                    base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS, limits=limits
                ) as client:
                    for case in cases:
                        if time.monotonic() > deadline:
                            run.answers[case.name] = Answer(None, "", None, "not sent: no time")
                            continue
                        run.answers[case.name] = send(client, case, world.admin.token)
            finally:
                stop.set()
                prober.join(timeout=30)
            server_log = server.log()
        assert "Invalid HTTP header" not in server_log
    return run, cases


@pytest.fixture(scope="module")
def runs(
    templates: Templates, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Run, list[Case]]]:
    workdir = tmp_path_factory.mktemp("bad-input")
    return {
        backend: attack(backend, templates, workdir / backend) for backend in ("sqlite", "postgres")
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_bad_input_is_a_4xx_problem_never_a_5xx_or_a_dropped_connection(
    runs: dict[str, tuple[Run, list[Case]]], backend: str
) -> None:
    run, cases = runs[backend]
    assert len(cases) > 300  # the OpenAPI document was enumerated, not skipped
    wrong = []
    for case in cases:
        answer = run.answers[case.name]
        served = answer.status is not None and answer.status < 500
        refused = (
            answer.status is not None
            and 400 <= answer.status < 500
            and answer.content_type == PROBLEM
            and answer.problem_type is not None
        )
        if not served or (case.must_refuse and not refused):
            wrong.append(f"{case.name}: {answer}")
    statuses = Counter(answer.status for answer in run.answers.values())
    print(f"{backend}: {len(cases)} bad requests, statuses {dict(statuses)}")
    assert not wrong, "\n".join(wrong[:40])


def test_both_databases_answer_every_bad_input_the_same(
    runs: dict[str, tuple[Run, list[Case]]],
) -> None:
    sqlite, postgres = runs["sqlite"][0], runs["postgres"][0]
    assert sqlite.answers.keys() == postgres.answers.keys()
    differ = [
        f"{name}: sqlite {sqlite.answers[name]} / postgres {postgres.answers[name]}"
        for name in sqlite.answers
        if (sqlite.answers[name].status, sqlite.answers[name].problem_type)
        != (postgres.answers[name].status, postgres.answers[name].problem_type)
    ]
    assert not differ, "\n".join(differ[:40])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_answer_to_bad_input_is_a_status_the_openapi_document_lists(
    runs: dict[str, tuple[Run, list[Case]]], backend: str
) -> None:
    run, cases = runs[backend]
    undocumented = [
        f"{case.name}: {run.answers[case.name].status} not in {sorted(case.documented)}"
        for case in cases
        if str(run.answers[case.name].status) not in case.documented
    ]
    assert not undocumented, "\n".join(undocumented[:40])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_live_answers_within_100_ms_while_bad_input_is_served(
    runs: dict[str, tuple[Run, list[Case]]], backend: str
) -> None:
    run, _ = runs[backend]
    assert not run.live_failures
    assert len(run.live_latencies) >= 20
    slowest = max(run.live_latencies)
    print(f"{backend}: {len(run.live_latencies)} /live probes, slowest {slowest * 1000:.1f} ms")
    assert slowest < LIVE_BUDGET_SECONDS
