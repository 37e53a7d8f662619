"""``/version`` carries what parity compares, and ``keel.parity`` compares two real apps."""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from tests.support.app import app_for, make_settings, running
from tests.support.policies import generous_policy

from keel.observe.version import VersionInfo, limit_policy_hash, slo_rule_files
from keel.parity import ParityReport, parity
from keel.settings import Settings

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


class _ByHost(httpx.AsyncBaseTransport):
    """Sends each request to the app's client named by the URL's host."""

    def __init__(self, clients: dict[str, httpx.AsyncClient]) -> None:
        self._clients = clients

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        client = self._clients[request.url.host]
        response = await client.get(request.url.path)
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


async def _parity(
    settings_a: Settings, settings_b: Settings, ignore: Collection[str] = ()
) -> ParityReport:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running(app_for(settings_a)))
        b = await stack.enter_async_context(running(app_for(settings_b)))
        transport = _ByHost({"a.test": a, "b.test": b})
        return await parity("http://a.test", "http://b.test", transport=transport, ignore=ignore)


@sqlite_only
async def test_version_reports_dependencies_and_policy_and_slo_hashes_without_secrets(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = (await client.get("/version")).json()
    VersionInfo.model_validate(body)  # what the OpenAPI document promises
    assert body["dependencies"] == {
        "database": "sqlite",
        "redis": "none",
        "breaker_store": "memory",
        "storage": "local",
        "tracing": "none",
    }
    assert body["limit_policy_hash"] == limit_policy_hash(settings)
    assert body["slo_rules_hash"] == slo_rule_files(settings).rules_hash
    assert len(body["settings_fingerprint"]["key_id"]) == 16
    assert settings.database_url not in str(body)


@sqlite_only
async def test_identical_apps_have_no_differences(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, str(tmp_path / "blobs"))
    report = await _parity(settings, settings)
    assert report.differences == ()
    assert report.compared > 80
    assert report.divergence_percent == 0.0


@sqlite_only
async def test_a_policy_and_a_setting_apart_are_listed_and_counted(
    database_url: str, tmp_path: Path
) -> None:
    base = make_settings(database_url, str(tmp_path / "blobs"))
    other = make_settings(
        database_url,
        str(tmp_path / "blobs"),
        ratelimit_policy=generous_policy(tmp_path),
        auth_cache_seconds=9,
    )
    report = await _parity(base, other, ignore=["setting:ratelimit_policy"])
    items = [d.item for d in report.differences]
    assert items == ["limit_policy", "setting:auth_cache_seconds"]
    assert report.divergence_percent == pytest.approx(200 / report.compared)


@sqlite_only
async def test_fingerprints_made_with_different_keys_compare_names_only(
    database_url: str, tmp_path: Path
) -> None:
    base = make_settings(database_url, str(tmp_path / "blobs"))
    other = make_settings(database_url, str(tmp_path / "blobs"), fingerprint_key="another-key")
    report = await _parity(base, other)
    assert report.differences == ()
    assert "different keys" in report.notes[0]
