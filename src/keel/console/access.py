"""The operator token: one secret for the console, kept in settings only as its SHA-256.

An organisation's admin sees its own organisation; the console shows all of them
(noisy neighbours, breaches by organisation), so it needs a credential no tenant
holds. Only the hash is configured, like every token Keel stores, and the
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "keel_ops_"  # noqa: S105 - a prefix that marks the kind, not a secret


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh operator token and the hash to configure (``KEEL_OPS_TOKEN_SHA256``)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_operator(authorization: str | None, configured_hash: str | None) -> bool:
    """Whether the ``Authorization`` header carries the operator token.

    With no hash configured the console is closed: there is no default token.
    """
    token = bearer_token(authorization)
    if token is None or not configured_hash:
        return False
    return hmac.compare_digest(token_hash(token), configured_hash.lower())
