"""Profiles refuse settings that must never reach staging or production."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.errors import ConfigurationError
from keel.settings import DEFAULT_SECRET, Profile, Settings

STRONG = "x" * 40


def test_dev_accepts_the_defaults() -> None:
    Settings(env=Profile.DEV).check_startable()


@pytest.mark.parametrize("env", [Profile.STAGING, Profile.PROD])
def test_staging_and_prod_refuse_the_built_in_secret(env: Profile) -> None:
    settings = Settings(env=env, secret_key=DEFAULT_SECRET, database_url="postgresql+asyncpg://x/y")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="KEEL_SECRET_KEY"):
        settings.check_startable()


def test_short_secrets_are_refused_outside_dev() -> None:
    settings = Settings(env=Profile.STAGING, secret_key="short")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="32 characters"):
        settings.check_startable()


def test_prod_refuses_sqlite_unless_told_explicitly(tmp_path: Path) -> None:
    audit = {
        "audit_keys": "k1:" + "a" * 40,
        "audit_key_id": "k1",
        "audit_signing_key_path": tmp_path / "signing.pem",
    }
    with pytest.raises(ConfigurationError, match="SQLite"):
        Settings(env=Profile.PROD, secret_key=STRONG, **audit).check_startable()  # type: ignore[arg-type]
    Settings(
        env=Profile.PROD,
        secret_key=STRONG,
        allow_sqlite_in_prod=True,
        **audit,  # type: ignore[arg-type]
    ).check_startable()


def test_environment_variables_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_ENV", "staging")
    monkeypatch.setenv("KEEL_ALLOWED_CONTENT_TYPES", "image/png, text/plain")
    settings = Settings()
    assert settings.env is Profile.STAGING
    assert settings.allowed_content_types == ["image/png", "text/plain"]


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "gs://bucket", "/var/blobs", "s3:/b"])
def test_storage_urls_other_than_file_or_s3_bucket_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="KEEL_STORAGE_URL"):
        Settings(storage_url=url)


@pytest.mark.parametrize("url", [None, "file:///var/blobs", "s3://bucket", "s3://bucket/a/b"])
def test_storage_urls_accepted(url: str | None) -> None:
    assert Settings(storage_url=url).storage_url == url
