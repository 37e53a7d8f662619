"""Keyed hashes that stand in for people in logs.

A log line may say *which* user or organisation acted, so lines can be grouped
and followed, but never *who*: the id goes through HMAC-SHA256 under a key
derived from the service secret. Without the secret the hash cannot be
reversed by trying every known id. Audit logging may reuse :func:`keyed_hash`
or swap in its own key.
"""

from __future__ import annotations

import hashlib
import hmac

_LOG_DOMAIN = b"keel-log-identity-v1"


def derive_key(secret: bytes, purpose: bytes = _LOG_DOMAIN) -> bytes:
    """A key for one purpose, so a log hash is never a token hash of the same input."""
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def keyed_hash(key: bytes, value: str, *, length: int = 16) -> str:
    """The first ``length`` hex digits of HMAC-SHA256(key, value)."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:length]
