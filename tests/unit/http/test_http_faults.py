"""Fault injection: the share of faulted requests is exact and evenly spread, probes pass
untouched, the answer is a problem document, the delay comes first, and prod refuses it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from keel.errors import ConfigurationError
from keel.http.faults import FaultInjection
from keel.settings import Settings


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: FaultInjection, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], headers, body


@given(rate=st.floats(min_value=0.0, max_value=1.0), count=st.integers(1, 400))
def test_any_run_of_requests_holds_the_rate_of_faults_give_or_take_one(
    rate: float, count: int
) -> None:
    injection = FaultInjection(_ok, error_rate=rate)
    faults = sum(injection.should_fail() for _ in range(count))
    assert abs(faults - rate * count) <= 1


async def test_five_percent_fails_one_request_in_twenty_with_a_problem_document() -> None:
    injection = FaultInjection(_ok, error_rate=0.05)
    answers = [await _call(injection, "/v1/users/me") for _ in range(40)]
    statuses = [status for status, _, _ in answers]
    assert statuses.count(500) == 2
    assert statuses.index(500) == 19
    _, headers, body = answers[19]
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["title"] == "Injected fault"


@pytest.mark.parametrize("path", ["/live", "/ready", "/health", "/metrics", "/version"])
async def test_probes_and_metrics_are_never_faulted_nor_delayed(path: str) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    injection = FaultInjection(_ok, error_rate=1.0, latency_seconds=0.2, sleep=sleep)
    assert (await _call(injection, path))[0] == 200
    assert slept == []


async def test_the_latency_is_added_to_every_user_request() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    injection = FaultInjection(_ok, latency_seconds=0.2, sleep=sleep)
    assert [(await _call(injection, "/v1/x"))[0] for _ in range(3)] == [200] * 3
    assert slept == [0.2] * 3


def test_faults_are_off_by_default_and_refused_in_prod() -> None:
    assert not Settings.model_validate({}).faults_enabled
    prod = {
        "env": "prod",
        "secret_key": "s" * 40,
        "database_url": "postgresql+asyncpg://db/keel",
        "audit_keys": "k1:" + "a" * 32,
        "audit_signing_key_path": "/k.pem",
    }
    Settings.model_validate(prod).check_startable()
    for fault in ({"fault_error_rate": 0.05}, {"fault_latency_ms": 200}):
        with pytest.raises(ConfigurationError, match="fault injection"):
            Settings.model_validate({**prod, **fault}).check_startable()
        Settings.model_validate({**prod, **fault, "env": "staging"}).check_startable()
