"""Building the audit log's keys and its :class:`Auditor` from settings.

In dev, a missing key ring is derived from the service secret and a missing
signing key is generated beside the blob directory (``keel-data/``), so
``make run`` needs no setup; ``Settings.check_startable`` refuses both
outside dev.
"""

from __future__ import annotations

from pathlib import Path

from keel.audit.pseudonym import KeyRing, dev_key_ring
from keel.audit.recorder import Auditor
from keel.audit.signing import Signer
from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.settings import Profile, Settings

SIGNING_KEY_FILE = "audit-signing-key.pem"


def key_ring(settings: Settings) -> KeyRing:
    if settings.audit_keys is None:
        return dev_key_ring(settings.secret_key.get_secret_value().encode())
    return KeyRing.parse(settings.audit_keys.get_secret_value(), settings.audit_key_id)


def signing_key_path(settings: Settings) -> Path:
    if settings.audit_signing_key_path is not None:
        return settings.audit_signing_key_path
    return settings.storage_dir.parent / SIGNING_KEY_FILE


def signer(settings: Settings) -> Signer:
    return Signer.from_file(signing_key_path(settings), create=settings.env is Profile.DEV)


def build_auditor(
    settings: Settings, database: Database, *, clock: Clock = SYSTEM_CLOCK
) -> Auditor:
    return Auditor(
        database,
        key_ring(settings),
        signer(settings),
        digest_every=settings.audit_digest_every,
        chains_per_org=settings.audit_chains_per_org,
        auth_failure_flush_seconds=settings.audit_auth_failure_flush_seconds,
        clock=clock,
    )
