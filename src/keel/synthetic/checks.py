"""The synthetic check: a real client's journey through Keel, step by step.

``keel synthetic run --target URL`` and the periodic job run the same steps
against a running service, as an admin token (the only kind whose
``Keel-Synthetic: 1`` is honoured, so the SLIs leave these requests out):

1. ``health``: ``GET /health`` answers 200 ``application/health+json`` with a
   ``status`` of ``pass`` or ``warn``;
2. ``create``: ``POST /v1/recognitions`` with a fresh ``Idempotency-Key``
   answers 201 (to another user of the token's organisation);
3. ``replay``: the same request again answers the same status and body, with
   ``Idempotent-Replayed: true``;
4. ``read``: ``GET /v1/recognitions/{id}`` answers the recognition created;
5. ``export``: ``POST /v1/exports`` (keyed) answers 202 with a ``Location``;
6. ``cleanup``: the recognition is deleted again (204), so checks leave no trace
   in the organisation's feed.

A step that cannot run because an earlier one failed fails as ``skipped``.
Each step's outcome and duration go to a :class:`keel.synthetic.metrics.SyntheticMetrics`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from keel.synthetic.metrics import SyntheticMetrics

# Honoured only from an organisation admin's token (keel.http.synthetic).
SYNTHETIC_HEADER = "Keel-Synthetic"
STEPS = ("health", "create", "replay", "read", "export", "cleanup")
# The operations the steps call (method, route template), marked synthetic.
ROUTES = (
    ("GET", "/v1/users/me"),
    ("GET", "/v1/users"),
    ("POST", "/v1/recognitions"),
    ("GET", "/v1/recognitions/{recognition_id}"),
    ("DELETE", "/v1/recognitions/{recognition_id}"),
    ("POST", "/v1/exports"),
)
HEALTH_TYPE = "application/health+json"
MESSAGE = "Synthetic check: this recognition is created and deleted again by Keel."


class StepFailed(Exception):
    """A step's answer was not what a working service answers."""


@dataclass(frozen=True, slots=True)
class StepResult:
    step: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SyntheticRun:
    target: str
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "steps": [
                {"step": s.step, "ok": s.ok, "seconds": round(s.seconds, 6), "detail": s.detail}
                for s in self.steps
            ],
        }


@dataclass
class _Journey:
    """What the steps hand each other."""

    client: httpx.AsyncClient
    token: str | None
    key: str = field(default_factory=lambda: f"keel-synthetic-{uuid.uuid4()}")
    recipient: str | None = None
    created: httpx.Response | None = None
    recognition_id: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            SYNTHETIC_HEADER: "1",
            **extra,
        }


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        request = response.request
        raise StepFailed(
            f"{request.method} {request.url.path} answered {response.status_code}, "
            f"not {status}: {response.text[:200]}"
        )


async def _health(journey: _Journey) -> None:
    response = await journey.client.get("/health")
    _expect(response, 200)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if content_type != HEALTH_TYPE:
        raise StepFailed(f"/health answered {content_type or 'no type'}, not {HEALTH_TYPE}")
    status = response.json().get("status")
    if status not in ("pass", "warn"):
        raise StepFailed(f"/health says status {status!r}")


async def _recipient(journey: _Journey) -> str:
    me = await journey.client.get("/v1/users/me", headers=journey.headers())
    _expect(me, 200)
    users = await journey.client.get("/v1/users", headers=journey.headers())
    _expect(users, 200)
    others = [u["id"] for u in users.json().get("items", []) if u["id"] != me.json()["id"]]
    if not others:
        raise StepFailed("the synthetic token's organisation has no other user to recognise")
    return str(others[0])


def _create_request(journey: _Journey, recipient: str) -> Awaitable[httpx.Response]:
    return journey.client.post(
        "/v1/recognitions",
        json={"recipient_id": recipient, "message": MESSAGE, "category": "synthetic"},
        headers=journey.headers(**{"Idempotency-Key": journey.key}),
    )


async def _create(journey: _Journey) -> None:
    journey.recipient = await _recipient(journey)
    created = await _create_request(journey, journey.recipient)
    _expect(created, 201)
    journey.created = created
    journey.recognition_id = str(created.json()["id"])


async def _replay(journey: _Journey) -> None:
    first = _needs(journey.created, "create")
    again = await _create_request(journey, _needs(journey.recipient, "create"))
    _expect(again, first.status_code)
    if again.headers.get("idempotent-replayed") != "true":
        raise StepFailed("the replay did not say Idempotent-Replayed: true")
    if again.json() != first.json():
        raise StepFailed("the replay answered a different body")


async def _on_created(journey: _Journey, method: str) -> httpx.Response:
    """``method`` on the recognition the create step made."""
    recognition_id = _needs(journey.recognition_id, "create")
    path = f"/v1/recognitions/{recognition_id}"
    return await journey.client.request(method, path, headers=journey.headers())


async def _read(journey: _Journey) -> None:
    response = await _on_created(journey, "GET")
    _expect(response, 200)
    if response.json().get("id") != journey.recognition_id:
        raise StepFailed("the read answered another recognition")


async def _export(journey: _Journey) -> None:
    response = await journey.client.post(
        "/v1/exports",
        json={"format": "json"},
        headers=journey.headers(**{"Idempotency-Key": f"{journey.key}-export"}),
    )
    _expect(response, 202)
    if not response.headers.get("location"):
        raise StepFailed("the export answered no Location")


async def _cleanup(journey: _Journey) -> None:
    _expect(await _on_created(journey, "DELETE"), 204)


def _needs(value: Any, step: str) -> Any:
    if value is None:
        raise StepFailed(f"skipped: the {step} step failed")
    return value


_STEP_BODIES: dict[str, Callable[[_Journey], Awaitable[None]]] = {
    "health": _health,
    "create": _create,
    "replay": _replay,
    "read": _read,
    "export": _export,
    "cleanup": _cleanup,
}


async def run_checks(
    target: str,
    token: str | None,
    *,
    timeout_seconds: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: SyntheticMetrics | None = None,
) -> SyntheticRun:
    """Run every step against ``target``; without a token only ``health`` can run.
    Each step's outcome and duration also go to ``metrics`` when given."""
    results: list[StepResult] = []
    async with httpx.AsyncClient(
        base_url=target.rstrip("/"), timeout=timeout_seconds, transport=transport
    ) as client:
        journey = _Journey(client, token)
        for step in STEPS:
            started = time.perf_counter()
            detail = ""
            try:
                if token is None and step != "health":
                    raise StepFailed("skipped: no token (--token or KEEL_SYNTHETIC_TOKEN)")
                await _STEP_BODIES[step](journey)
            except StepFailed as error:
                detail = str(error)
            except (httpx.HTTPError, ValueError, KeyError) as error:
                detail = f"{type(error).__name__}: {error}"
            seconds = time.perf_counter() - started
            results.append(StepResult(step, not detail, seconds, detail))
            if metrics is not None:
                metrics.record(step, not detail, seconds)
    return SyntheticRun(target, tuple(results))
