"""Where file bytes live: a small Protocol and its local-directory implementation."""

from keel.storage.base import BlobStore, BlobWriter, StoredBlob
from keel.storage.local import LocalDirectoryStore

__all__ = ["BlobStore", "BlobWriter", "LocalDirectoryStore", "StoredBlob"]
