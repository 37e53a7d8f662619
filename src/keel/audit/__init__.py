"""The audit log: who did what, when — pseudonymised and tamper-evident.

``await services.audit.record(session, AuditEvent(...))`` appends an event in
the caller's transaction; ``await services.audit.record_now(AuditEvent(...))``
does so in a short transaction of its own (breaker transitions, rate-limit
breaches: code that holds no session). Codes and their fields are in
:mod:`keel.audit.registry`.
"""

from keel.audit.chain import GENESIS, ChainedEvent, DigestBody
from keel.audit.config import build_auditor, key_ring, signer, signing_key_path
from keel.audit.events import AuditEvent, AuditEventInvalid
from keel.audit.pseudonym import KeyRing
from keel.audit.recorder import SYSTEM_CHAIN, Auditor, Recorded
from keel.audit.registry import REGISTRY, EventCode, EventSpec, describe
from keel.audit.search import AuditQuery
from keel.audit.signing import PublicKeys, Signer
from keel.audit.verify import Break, BreakKind, Report, verify

__all__ = [
    "GENESIS",
    "REGISTRY",
    "SYSTEM_CHAIN",
    "AuditEvent",
    "AuditEventInvalid",
    "AuditQuery",
    "Auditor",
    "Break",
    "BreakKind",
    "ChainedEvent",
    "DigestBody",
    "EventCode",
    "EventSpec",
    "KeyRing",
    "PublicKeys",
    "Recorded",
    "Report",
    "Signer",
    "build_auditor",
    "describe",
    "key_ring",
    "signer",
    "signing_key_path",
    "verify",
]
