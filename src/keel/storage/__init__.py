"""Where file bytes live: a small Protocol and its local-directory implementation,
and the decorator that puts every call through the ``storage`` dependency."""

from keel.storage.base import BlobStore, BlobWriter, StoredBlob
from keel.storage.local import LocalDirectoryStore
from keel.storage.resilient import ResilientBlobStore

__all__ = ["BlobStore", "BlobWriter", "LocalDirectoryStore", "ResilientBlobStore", "StoredBlob"]
