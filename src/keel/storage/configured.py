"""The blob store a deployment's settings name, chosen by URL.

``KEEL_STORAGE_URL`` unset (or ``file://PATH``) keeps bytes in a local directory,
the embedded default; ``s3://bucket/prefix`` keeps them in object storage that
every replica shares. The S3 client is imported only when asked for, so the
embedded shape never loads it.
"""

from __future__ import annotations

from pathlib import Path

from keel.settings import Settings
from keel.storage.base import BlobStore
from keel.storage.local import LocalDirectoryStore


def from_settings(settings: Settings) -> BlobStore:
    """A new, unopened store; the caller ``aclose()``-s it when done."""
    url = settings.storage_url
    if url is None:
        return LocalDirectoryStore(settings.storage_dir)
    if url.startswith("file://"):
        return LocalDirectoryStore(Path(url.removeprefix("file://")))
    from keel.storage.s3 import S3Location, S3Options, S3Store  # noqa: PLC0415 - see above

    secret = settings.storage_s3_secret_access_key
    return S3Store(
        S3Location.parse(url),
        S3Options(
            endpoint_url=settings.storage_s3_endpoint_url,
            region=settings.storage_s3_region,
            access_key_id=settings.storage_s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            part_size=settings.storage_s3_part_size_bytes,
            timeout_seconds=settings.storage_timeout_seconds,
            max_connections=settings.storage_max_concurrent_calls,
        ),
    )
