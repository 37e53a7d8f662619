"""KEEL_STORAGE_URL picks the blob store; unset keeps the embedded local directory."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from keel.settings import Settings
from keel.storage import LocalDirectoryStore, from_settings
from keel.storage.s3 import S3Location, S3Store


def test_unset_is_the_local_directory_of_storage_dir(tmp_path: Path) -> None:
    store = from_settings(Settings(storage_dir=tmp_path / "blobs"))
    assert isinstance(store, LocalDirectoryStore)
    assert store.root == (tmp_path / "blobs").resolve()


def test_a_file_url_is_a_local_directory(tmp_path: Path) -> None:
    store = from_settings(Settings(storage_url=f"file://{tmp_path}/elsewhere"))
    assert isinstance(store, LocalDirectoryStore)
    assert store.root == (tmp_path / "elsewhere").resolve()


def test_an_s3_url_is_a_bucket_and_prefix_with_the_s3_settings() -> None:
    settings = Settings(
        storage_url="s3://evidence/keel/prod/",
        storage_s3_endpoint_url="http://127.0.0.1:8333",
        storage_s3_access_key_id="id",
        storage_s3_secret_access_key=SecretStr("secret"),
        storage_s3_part_size_bytes=6 * 1024 * 1024,
        storage_timeout_seconds=3.0,
    )
    store = from_settings(settings)
    assert isinstance(store, S3Store)
    assert store.location == S3Location(bucket="evidence", prefix="keel/prod/")
    assert store.object_key("a/b") == "keel/prod/a/b"
    assert store.options.endpoint_url == "http://127.0.0.1:8333"
    assert (store.options.access_key_id, store.options.secret_access_key) == ("id", "secret")
    assert store.options.part_size == 6 * 1024 * 1024
    assert store.options.timeout_seconds == 3.0


def test_an_s3_url_without_prefix_keeps_keys_at_the_bucket_root() -> None:
    assert S3Location.parse("s3://bucket") == S3Location(bucket="bucket", prefix="")
