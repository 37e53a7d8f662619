"""Pseudonymised identifiers: HMAC-SHA256 under a key ring, tagged with the key id.

A plain hash of a UUID, an email or an IPv4 address can be reversed by
hashing every candidate; a keyed hash cannot without the key. Each value is
``<key id>:<64 hex>`` and the message is ``<kind> NUL <value>``, so the same
raw string used as a user id and as a token id gives unrelated pseudonyms.

Rotation: new events use the ring's current key. Nothing in the chain needs
the keys (hashes cover the stored pseudonyms), so verification is unaffected;
searching by a raw identifier hashes it under every key still in the ring and
matches any of them. Retiring a key from the ring makes the events written
under it unsearchable by raw identifier, never unverifiable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from keel.errors import ConfigurationError
from keel.keyed_hash import keyed_hash

Kind = Literal["org", "user", "token", "ip"]

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class KeyRing:
    keys: Mapping[str, bytes]
    current_id: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigurationError("the audit key ring is empty")
        for key_id in self.keys:
            if not _KEY_ID.match(key_id):
                raise ConfigurationError(
                    f"audit key id {key_id!r} must be 1-16 letters, digits, '-' or '_'"
                )
        if self.current_id not in self.keys:
            raise ConfigurationError(
                f"KEEL_AUDIT_KEY_ID={self.current_id!r} is not in the audit key ring"
            )

    @classmethod
    def parse(cls, spec: str, current_id: str | None) -> KeyRing:
        """``id:secret,id:secret``; the current key defaults to the last one listed."""
        keys: dict[str, bytes] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key_id, sep, secret = item.partition(":")
            if not sep or not secret:
                raise ConfigurationError("KEEL_AUDIT_KEYS must look like 'id:secret,id:secret'")
            if key_id in keys:
                raise ConfigurationError(f"audit key id {key_id!r} is listed twice")
            keys[key_id] = secret.encode()
        if not keys:
            raise ConfigurationError("KEEL_AUDIT_KEYS lists no key")
        return cls(keys=keys, current_id=current_id or list(keys)[-1])

    def pseudonym(self, kind: Kind, value: str, key_id: str | None = None) -> str:
        key_id = key_id or self.current_id
        digest = keyed_hash(self.keys[key_id], f"{kind}\x00{value}")
        return f"{key_id}:{digest}"

    def candidates(self, kind: Kind, value: str) -> list[str]:
        """The value's pseudonym under every key in the ring (for searching)."""
        return [self.pseudonym(kind, value, key_id) for key_id in self.keys]

    def short_secrets(self) -> list[str]:
        return [key_id for key_id, secret in self.keys.items() if len(secret) < MIN_SECRET_LENGTH]


def dev_key_ring(service_secret: bytes) -> KeyRing:
    """The dev default: one key derived from the service secret (refused outside dev)."""
    derived = keyed_hash(service_secret, "keel-audit-pseudonyms-v1")
    return KeyRing(keys={"dev": derived.encode()}, current_id="dev")
