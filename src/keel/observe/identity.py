"""Keyed hashes that stand in for people in logs.

A log line may say *which* user or organisation acted, so lines can be grouped
and followed, but never *who*: the id goes through a keyed hash under a key
derived from the service secret for this purpose. Breach rows use the same key,
so a breach's ``user_hash`` starts with the ``user`` field of that user's log
lines and the two can be joined without either holding the id.
"""

from __future__ import annotations

from keel.keyed_hash import derive_key

LOG_IDENTITY = b"keel-log-identity-v1"
LOG_HASH_LENGTH = 16


def identity_key(secret: bytes) -> bytes:
    """The key that hashes user and organisation ids in logs and breach rows."""
    return derive_key(secret, LOG_IDENTITY)
