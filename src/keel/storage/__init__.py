"""Where file bytes live: a small Protocol, its local-directory and S3 implementations
(chosen by :func:`from_settings`), and the decorator that puts every call through the
``storage`` dependency."""

from keel.storage.base import BlobStore, BlobWriter, StoredBlob, content_etag
from keel.storage.configured import from_settings
from keel.storage.local import LocalDirectoryStore
from keel.storage.resilient import ResilientBlobStore

__all__ = [
    "BlobStore",
    "BlobWriter",
    "LocalDirectoryStore",
    "ResilientBlobStore",
    "StoredBlob",
    "content_etag",
    "from_settings",
]
