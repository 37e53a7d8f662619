"""``keel jobs …`` and ``keel admin set-webhook`` against a real database."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from keel.cli import app
from keel.db.engine import Database
from keel.domain import orgs
from keel.jobs import queue
from keel.jobs.queries import jobs

runner = CliRunner()


def keel(database_url: str, *args: str) -> dict[str, object]:
    result = runner.invoke(app, list(args), env={"KEEL_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


async def _seed(database_url: str) -> tuple[str, str, str]:
    database = Database(database_url)
    try:
        async with database.write() as session:
            dead = await queue.enqueue(session, "cli.dead")
            ready = await queue.enqueue(session, "cli.ready", queue="critical")
            org = await orgs.create_org(session, "Hooks")
            await session.execute(
                jobs.update().where(jobs.c.id == dead).values(state="dead", last_error="boom")
            )
        return dead, ready, org.id
    finally:
        await database.dispose()


def test_jobs_cli_lists_shows_requeues_cancels_and_counts(database_url: str) -> None:
    dead, ready, org_id = asyncio.run(_seed(database_url))
    listed = keel(database_url, "jobs", "dead", "list", "--json")
    assert [item["id"] for item in listed["items"]] == [dead]  # type: ignore[index]
    shown = keel(database_url, "jobs", "show", dead, "--json")
    assert (shown["state"], shown["last_error"]) == ("dead", "boom")
    stats = keel(database_url, "jobs", "stats", "--json")
    depth = {q["queue"]: q["depth"] for q in stats["queues"]}  # type: ignore[attr-defined]
    assert depth == {"default": {"dead": 1}, "critical": {"ready": 1}}
    assert keel(database_url, "jobs", "dead", "requeue", dead, "--json") == {"requeued": [dead]}
    assert keel(database_url, "jobs", "cancel", ready, "--json")["state"] == "cancelled"
    states = keel(database_url, "jobs", "list", "--json")
    assert {item["id"]: item["state"] for item in states["items"]} == {  # type: ignore[attr-defined]
        dead: "ready",
        ready: "cancelled",
    }
    hooked = keel(
        database_url, "admin", "set-webhook", org_id, "https://hooks.example.test/k", "--json"
    )
    assert hooked["webhook_url"] == "https://hooks.example.test/k"
    refused = runner.invoke(
        app,
        ["admin", "set-webhook", org_id, "ftp://nope"],
        env={"KEEL_DATABASE_URL": database_url},
    )
    assert refused.exit_code == 1
