"""The console in a real browser: headless Chromium loads ``/ops`` from a real ``keel serve``.

Chromium (Debian package ``chromium``) runs the page's script with the operator
token given in the URL fragment (which browsers never send to the server), and
the numbers the page shows must be the API's own. A refused token shows the login
form instead of data, and the token never reaches the server's log.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from keel.console.access import new_token
from keel.db.engine import Database
from keel.jobs import enqueue
from keel.slo.rollup import add_counts, minute_of
from tests.support.processes import keel_server, server_env
from tests.support.services import need_binary

pytestmark = pytest.mark.e2e


_VOID = frozenset({"input", "meta", "link", "br", "img", "hr"})


class _Elements(HTMLParser):
    """Text and attributes of every element with an id, and the rows of each table body."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self._open: list[tuple[str, str]] = []  # (tag, id) of the elements with an id
        self._body: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        ident = found.get("id")
        if tag == "body":
            self.attrs["body"] = found
        if ident:
            self.attrs[ident] = found
            self.text.setdefault(ident, "")
            if tag not in _VOID:
                self._open.append((tag, ident))
            if tag == "tbody":
                self._body = ident
                self.rows[ident] = []
        if tag == "tr" and self._body:
            self.rows[self._body].append([])
        if tag == "td" and self._body:
            self.rows[self._body][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            self._open.pop()
        if tag == "tbody":
            self._body = None

    def handle_data(self, data: str) -> None:
        for _, ident in self._open[-1:]:
            self.text[ident] += data
        if self._body and self.rows[self._body] and self.rows[self._body][-1]:
            self.rows[self._body][-1][-1] += data


def _render(url: str, profile: Path) -> _Elements:
    chromium = need_binary("chromium")
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = _Elements()
    parsed.feed(result.stdout)
    return parsed


async def _one_dead_job(database_url: str) -> None:
    database = Database(database_url)
    try:
        job_id = await enqueue(database, "jobs.purge_finished", {}, queue="default")
        await enqueue(database, "jobs.purge_finished", {}, queue="default")
        last_minute = minute_of(time.time()) - 1  # a 0.2 % error ratio: burn rate 4
        await add_counts(database, {("api-availability", last_minute): [1000, 998]})
        async with database.write() as session:
            await session.execute(
                text("UPDATE jobs SET state = 'dead' WHERE id = :id"), {"id": job_id}
            )
    finally:
        await database.dispose()


def test_the_page_shows_the_apis_numbers_and_refuses_a_wrong_token(tmp_path: Path) -> None:
    token, digest = new_token()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}"
    extra = {"KEEL_OPS_TOKEN_SHA256": digest, "KEEL_INPROCESS_WORKER": "off"}  # jobs stay put
    env = server_env(database_url, tmp_path, extra)
    with keel_server(env, tmp_path, ready_path="/ready") as server:
        asyncio.run(_one_dead_job(database_url))
        api = httpx.get(
            f"{server.url}/ops/state", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert api["errors"] == {}

        page = _render(f"{server.url}/ops#token={token}", tmp_path / "profile-a")

        assert page.attrs["body"].get("data-loaded") == "true"
        assert "hidden" in page.attrs["login"]
        assert page.text["dead-jobs"] == str(api["jobs"]["dead"]) == "1"
        checks = {row[0]: row[2] for row in page.rows["readiness"]}
        assert checks == {c["name"]: c["status"] for c in api["readiness"]["checks"]}
        queues = {row[0]: row[1:5] for row in page.rows["queues"]}
        assert queues["default"] == ["1", "0", "0", "1"]  # ready, running, retrying, dead
        breakers = {row[0]: row[1] for row in page.rows["breakers"]}
        assert breakers == {b["name"]: b["state"] for b in api["breakers"]}
        assert page.text["readiness-status"] == api["readiness"]["status"]
        for slo in api["slos"]:
            shown = page.attrs[f"budget-{slo['slo']}"]["data-value"]
            assert shown is not None
            assert float(shown) == pytest.approx(slo["budget_remaining"])
        availability = next(s for s in api["slos"] if s["slo"] == "api-availability")
        assert availability["windows"][0]["burn_rate"] == pytest.approx(4.0)

        refused = _render(f"{server.url}/ops#token=not-the-token", tmp_path / "profile-b")
        assert "hidden" not in refused.attrs["login"]
        assert "hidden" in refused.attrs["console"]
        assert refused.text["login-error"] == "That token was refused."
        assert token not in server.log()
