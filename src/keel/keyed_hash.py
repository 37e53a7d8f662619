"""Keyed hashes: how Keel names a person, a token or an address without keeping it.

Logs, audit pseudonyms, breach rows and token digests all need the same thing:
a stable name for a value that cannot be reversed by hashing every plausible
input. That is HMAC-SHA256 under a secret key. Each use derives its own key
from the service secret with a *purpose* label, so a hash made for one use is
never the hash of the same input in another (a log's user hash is not a token
digest).
"""

from __future__ import annotations

import hashlib
import hmac

FULL_LENGTH = 64


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A key for one purpose, derived from ``secret``."""
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def keyed_hash(key: bytes, value: str, *, length: int = FULL_LENGTH) -> str:
    """The first ``length`` hex digits of HMAC-SHA256(key, value)."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:length]
