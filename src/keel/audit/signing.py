"""Ed25519 keys for the signed digests.

The private key lives in a PEM file (PKCS #8) named by
``KEEL_AUDIT_SIGNING_KEY_PATH``; in dev a missing file is generated (mode
0600), in staging and prod it must exist. The public key is exported as PEM
(SubjectPublicKeyInfo) so an auditor can verify digests without any secret.
Each key has an id — the first 16 hex digits of SHA-256 over its raw public
bytes — carried on every digest so verification picks the right key after
a signing-key rotation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keel.errors import ConfigurationError


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as error:
        raise ConfigurationError("not a PEM public key") from error
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("the audit public key must be Ed25519")
    return key


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: Path, *, create: bool) -> Signer:
        """Load the key; with ``create`` (dev only) write a new one when the file is missing."""
        if not path.exists():
            if not create:
                raise ConfigurationError(
                    f"the audit signing key {path} does not exist: "
                    "create one with `keel audit generate-key` and set KEEL_AUDIT_SIGNING_KEY_PATH"
                )
            # FileExistsError: another process generated it first, so use theirs.
            with contextlib.suppress(FileExistsError):
                write_private_key(path, Ed25519PrivateKey.generate())
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"cannot read the audit signing key {path}") from error
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"the audit signing key {path} is not an Ed25519 key")
        return cls(key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def public_pem(self) -> str:
        return public_pem(self.public_key)


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a PKCS #8 PEM, mode 0600, atomically; never overwrites an existing key.

    The key is written to a temporary file and hard-linked into place, so a
    concurrent reader sees either no file or the whole key, and of two
    processes generating at once exactly one wins (the other gets
    ``FileExistsError``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class PublicKeys:
    """The public keys a verifier trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(key): key for key in keys}

    def __contains__(self, kid: str) -> bool:
        return kid in self._keys

    def verify(self, kid: str, signature: bytes, message: bytes) -> bool:
        key = self._keys.get(kid)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True
