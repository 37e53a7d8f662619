"""Recognitions over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from tests.support.app import World

PROBLEM = "application/problem+json"


async def recognise(
    client: httpx.AsyncClient,
    giver: object,
    recipient_id: str,
    message: str = "thanks!",
    **extra: object,
) -> httpx.Response:
    body = {"recipient_id": recipient_id, "message": message, **extra}
    return await client.post("/v1/recognitions", json=body, headers=giver.headers)  # type: ignore[attr-defined]


async def test_create_returns_the_documented_fields(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await recognise(client, world.alice, world.bob.id, "Great demo", category="craft")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "org_id",
        "giver_id",
        "recipient_id",
        "message",
        "category",
        "evidence_ids",
        "created_at",
    }
    assert body["giver_id"] == world.alice.id
    assert body["recipient_id"] == world.bob.id
    assert body["org_id"] == world.alice.org_id
    assert body["category"] == "craft"
    assert body["evidence_ids"] == []
    fetched = await client.get(f"/v1/recognitions/{body['id']}", headers=world.bob.headers)
    assert fetched.status_code == 200
    assert fetched.json() == body


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"message": "hi"}, "body.recipient_id"),
        ({"recipient_id": "x", "message": ""}, "body.message"),
        ({"recipient_id": "x", "message": "a" * 2001}, "body.message"),
        ({"recipient_id": "x", "message": "ok", "surprise": 1}, "body.surprise"),
        ({"recipient_id": "x", "message": "ok", "evidence_ids": "nope"}, "body.evidence_ids"),
    ],
)
async def test_invalid_bodies_are_422_problems_naming_the_field(
    client: httpx.AsyncClient, world: World, payload: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/recognitions", json=payload, headers=world.alice.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(problem)
    assert problem["status"] == 422
    assert problem["instance"] == "/v1/recognitions"
    assert field in [error["field"] for error in problem["errors"]]


async def test_malformed_json_is_a_problem_not_a_500(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        "/v1/recognitions",
        content=b"{not json",
        headers={**world.alice.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400  # a syntax error (RFC 9110 §15.5.1); 422 is for content
    assert response.json()["type"].endswith("/bad-request")
    assert response.headers["content-type"] == PROBLEM


async def test_message_of_exactly_2000_characters_is_accepted(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await recognise(client, world.alice, world.bob.id, "é" * 2000)
    assert response.status_code == 201


async def test_self_recognition_is_refused(client: httpx.AsyncClient, world: World) -> None:
    response = await recognise(client, world.alice, world.alice.id)
    assert response.status_code == 422
    assert response.json()["field"] == "recipient_id"


async def test_recipient_in_another_org_reads_like_a_missing_user(
    client: httpx.AsyncClient, world: World
) -> None:
    other = await recognise(client, world.alice, world.mallory.id)
    missing = await recognise(client, world.alice, "01a22537-0000-7000-8000-000000000000")
    assert other.status_code == missing.status_code == 422
    assert other.json()["detail"] == missing.json()["detail"]


async def test_list_filters_by_recipient_and_giver(client: httpx.AsyncClient, world: World) -> None:
    await recognise(client, world.alice, world.bob.id)
    await recognise(client, world.bob, world.alice.id)
    await recognise(client, world.admin, world.bob.id)
    to_bob = (
        await client.get(
            f"/v1/recognitions?recipient_id={world.bob.id}", headers=world.alice.headers
        )
    ).json()
    assert {item["recipient_id"] for item in to_bob["items"]} == {world.bob.id}
    assert len(to_bob["items"]) == 2
    by_bob = (
        await client.get(f"/v1/recognitions?giver_id={world.bob.id}", headers=world.alice.headers)
    ).json()
    assert [item["giver_id"] for item in by_bob["items"]] == [world.bob.id]


async def test_list_filters_by_creation_time(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    clock = app.state.services.clock
    first = (await recognise(client, world.alice, world.bob.id, "first")).json()
    clock.advance(3600)
    second = (await recognise(client, world.alice, world.bob.id, "second")).json()
    params = {"created_after": first["created_at"]}
    after = (
        await client.get("/v1/recognitions", params=params, headers=world.alice.headers)
    ).json()
    assert [item["id"] for item in after["items"]] == [second["id"]]
    params = {"created_before": second["created_at"]}
    before = (
        await client.get("/v1/recognitions", params=params, headers=world.alice.headers)
    ).json()
    assert [item["id"] for item in before["items"]] == [first["id"]]


async def test_pagination_walks_every_row_once_newest_first(
    client: httpx.AsyncClient, world: World
) -> None:
    created = [
        (await recognise(client, world.alice, world.bob.id, f"m{i}")).json()["id"] for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (
            await client.get("/v1/recognitions", params=params, headers=world.alice.headers)
        ).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_pagination_has_no_duplicates_or_gaps_under_concurrent_inserts(
    client: httpx.AsyncClient, world: World
) -> None:
    existing = {
        (await recognise(client, world.alice, world.bob.id, f"old{i}")).json()["id"]
        for i in range(12)
    }
    seen: list[str] = []
    inserted: list[str] = []
    cursor = None

    async def insert_some() -> None:
        for i in range(3):
            inserted.append(
                (await recognise(client, world.bob, world.alice.id, f"new{i}")).json()["id"]
            )

    for _ in range(20):
        params: dict[str, str | int] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page_task = client.get("/v1/recognitions", params=params, headers=world.alice.headers)
        page, _ = await asyncio.gather(page_task, insert_some())
        body = page.json()
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert existing <= set(seen), "a row that existed before paging began was skipped"


async def test_bad_cursor_is_a_400_problem(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/v1/recognitions?cursor=garbage!", headers=world.alice.headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


async def test_limit_out_of_range_is_refused(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/v1/recognitions?limit=0", headers=world.alice.headers)
    assert response.status_code == 422


async def test_giver_may_delete_and_then_it_is_gone(
    client: httpx.AsyncClient, world: World
) -> None:
    rid = (await recognise(client, world.alice, world.bob.id)).json()["id"]
    assert (
        await client.delete(f"/v1/recognitions/{rid}", headers=world.alice.headers)
    ).status_code == 204
    assert (
        await client.get(f"/v1/recognitions/{rid}", headers=world.alice.headers)
    ).status_code == 404
    listed = (await client.get("/v1/recognitions", headers=world.alice.headers)).json()
    assert rid not in [item["id"] for item in listed["items"]]
    assert (
        await client.delete(f"/v1/recognitions/{rid}", headers=world.alice.headers)
    ).status_code == 404


async def test_recipient_may_not_delete_but_an_admin_may(
    client: httpx.AsyncClient, world: World
) -> None:
    rid = (await recognise(client, world.alice, world.bob.id)).json()["id"]
    refused = await client.delete(f"/v1/recognitions/{rid}", headers=world.bob.headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert (
        await client.delete(f"/v1/recognitions/{rid}", headers=world.admin.headers)
    ).status_code == 204


async def test_unknown_route_and_wrong_method_are_problems(
    client: httpx.AsyncClient, world: World
) -> None:
    missing = await client.get("/v1/nothing-here", headers=world.alice.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    wrong = await client.put("/v1/recognitions", headers=world.alice.headers)
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == PROBLEM
    assert wrong.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("value", ["0.5", "2026-01-01T00:00:00", "yesterday"])
async def test_time_filters_want_rfc3339_with_an_offset(
    client: httpx.AsyncClient, world: World, value: str
) -> None:
    response = await client.get(
        "/v1/recognitions", params={"created_before": value}, headers=world.alice.headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
