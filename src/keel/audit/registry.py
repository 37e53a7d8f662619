"""The registry of audit event codes: the one place that says what each event means.

Every event Keel records has a code listed here with its meaning, the
pseudonymised identifiers it carries (``actor``, ``subject``, ``token``,
``ip``) and the names of its plain ``fields``. Recording an event whose fields
are not the registered ones is a programming error and is refused, so the log
never grows undocumented shapes. Fields hold resource ids, counts, names of
limits and states — never personal data: identifiers of people, tokens and
network addresses go only into the pseudonymised slots.

Codes are ``<area>.<what happened>`` in the past tense and are stable: an
auditor's queries depend on them. Add codes; never rename or reuse one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventCode(StrEnum):
    AUTH_SUCCEEDED = "auth.succeeded"
    AUTH_FAILED = "auth.failed"
    TOKEN_CREATED = "token.created"  # noqa: S105 - an event code, not a secret
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event code, not a secret
    RECOGNITION_CREATED = "recognition.created"
    RECOGNITION_DELETED = "recognition.deleted"
    EVIDENCE_UPLOADED = "evidence.uploaded"
    EVIDENCE_DOWNLOADED = "evidence.downloaded"
    EVIDENCE_DELETED = "evidence.deleted"
    EXPORT_REQUESTED = "export.requested"
    EXPORT_COMPLETED = "export.completed"
    EXPORT_DOWNLOADED = "export.downloaded"
    RATE_LIMIT_BREACHED = "ratelimit.breached"
    QUOTA_THRESHOLD_CROSSED = "quota.threshold_crossed"
    IDEMPOTENCY_KEY_MISMATCH = "idempotency.key_mismatch"
    ORG_CREATED = "org.created"
    ORG_CHANGED = "org.changed"
    USER_CREATED = "user.created"
    USER_ROLE_CHANGED = "user.role_changed"
    PLAN_CHANGED = "plan.changed"
    LIMIT_OVERRIDE_SET = "limit.override_set"
    BREAKER_STATE_CHANGED = "breaker.state_changed"
    JOB_DEAD_LETTERED = "job.dead_lettered"
    MIGRATION_APPLIED = "migration.applied"
    MIGRATION_FAILED = "migration.failed"
    DEPLOYMENT_STARTED = "deployment.started"
    DEPLOYMENT_PROMOTED = "deployment.promoted"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_STATE_CHANGED = "deployment.state_changed"
    DEPLOYMENT_APPROVED = "deployment.approved"
    DEPLOYMENT_CONTRACT_PHASE_CHANGED = "deployment.contract_phase_changed"
    AUDIT_CHAINS_OPENED = "audit.chains_opened"


Identifier = str  # one of IDENTIFIERS
IDENTIFIERS = ("actor", "subject", "token", "ip")


@dataclass(frozen=True, slots=True)
class EventSpec:
    code: EventCode
    meaning: str
    identifiers: tuple[Identifier, ...] = ()
    fields: tuple[str, ...] = ()


_SPECS = (
    EventSpec(
        EventCode.AUTH_SUCCEEDED,
        "A bearer token was checked against the database and accepted (recorded on a cache "
        "miss only, so at most once per token per process per KEEL_AUTH_CACHE_SECONDS).",
        ("actor", "token", "ip"),
    ),
    EventSpec(
        EventCode.AUTH_FAILED,
        "Requests were refused for a malformed, unknown or revoked token. Failures are counted "
        "in memory and flushed as one event per (reason, ip) per flush window.",
        ("ip",),
        ("reason", "count", "window_start", "window_end"),
    ),
    EventSpec(
        EventCode.TOKEN_CREATED,
        "An API token was issued to a user.",
        ("actor", "subject", "token"),
        ("via",),
    ),
    EventSpec(
        EventCode.TOKEN_REVOKED,
        "An API token was revoked.",
        ("actor", "subject", "token"),
        ("via",),
    ),
    EventSpec(
        EventCode.RECOGNITION_CREATED,
        "A recognition was given.",
        ("actor", "subject", "token", "ip"),
        ("recognition_id", "evidence_count"),
    ),
    EventSpec(
        EventCode.RECOGNITION_DELETED,
        "A recognition was (soft-)deleted by its giver or an admin.",
        ("actor", "subject", "token", "ip"),
        ("recognition_id",),
    ),
    EventSpec(
        EventCode.EVIDENCE_UPLOADED,
        "An evidence file was stored.",
        ("actor", "token", "ip"),
        ("evidence_id", "size", "sha256", "content_type"),
    ),
    EventSpec(
        EventCode.EVIDENCE_DOWNLOADED,
        "An evidence file's bytes were served.",
        ("actor", "token", "ip"),
        ("evidence_id",),
    ),
    EventSpec(
        EventCode.EVIDENCE_DELETED,
        "An evidence file was (soft-)deleted.",
        ("actor", "subject", "token", "ip"),
        ("evidence_id",),
    ),
    EventSpec(
        EventCode.EXPORT_REQUESTED,
        "An export of the organisation's recognitions was requested.",
        ("actor", "token", "ip"),
        ("export_id", "format"),
    ),
    EventSpec(
        EventCode.EXPORT_COMPLETED,
        "An export finished, successfully or not.",
        ("subject",),
        ("export_id", "status", "row_count", "size"),
    ),
    EventSpec(
        EventCode.EXPORT_DOWNLOADED,
        "An export file was served.",
        ("actor", "token", "ip"),
        ("export_id",),
    ),
    EventSpec(
        EventCode.RATE_LIMIT_BREACHED,
        "A request was refused with 429 by a rate limit.",
        ("actor", "token", "ip"),
        ("limit", "scope", "retry_after"),
    ),
    EventSpec(
        EventCode.QUOTA_THRESHOLD_CROSSED,
        "An organisation's usage crossed a warning threshold of a quota.",
        ("actor",),
        ("quota", "threshold_percent", "used", "allowed", "period"),
    ),
    EventSpec(
        EventCode.IDEMPOTENCY_KEY_MISMATCH,
        "An Idempotency-Key was reused with a different request (422/409 answered).",
        ("actor", "token", "ip"),
        ("method", "route", "reason"),
    ),
    EventSpec(
        EventCode.ORG_CREATED,
        "An organisation was created.",
        ("actor",),
        ("plan", "timezone", "via"),
    ),
    EventSpec(
        EventCode.ORG_CHANGED,
        "An organisation's settings (name, time zone, webhook) were changed.",
        ("actor",),
        ("changed", "via"),
    ),
    EventSpec(
        EventCode.USER_CREATED,
        "A user was added to the organisation.",
        ("actor", "subject"),
        ("role", "via"),
    ),
    EventSpec(
        EventCode.USER_ROLE_CHANGED,
        "A user's role was changed.",
        ("actor", "subject"),
        ("from_role", "to_role", "via"),
    ),
    EventSpec(
        EventCode.PLAN_CHANGED,
        "The organisation's plan was changed.",
        ("actor",),
        ("from_plan", "to_plan", "via"),
    ),
    EventSpec(
        EventCode.LIMIT_OVERRIDE_SET,
        "An operator set or cleared a per-organisation limit override.",
        ("actor",),
        ("limit", "value", "via"),
    ),
    EventSpec(
        EventCode.BREAKER_STATE_CHANGED,
        "A circuit breaker moved between closed, open and half-open (system chain).",
        (),
        ("breaker", "from_state", "to_state", "reason"),
    ),
    EventSpec(
        EventCode.JOB_DEAD_LETTERED,
        "A background job exhausted its retries and was moved to the dead-letter state.",
        (),
        ("job_id", "queue", "task", "attempts", "error"),
    ),
    EventSpec(
        EventCode.MIGRATION_APPLIED,
        "A schema migration was applied (system chain).",
        (),
        ("from_revision", "to_revision", "phase", "via"),
    ),
    EventSpec(
        EventCode.MIGRATION_FAILED,
        "A schema migration failed and was rolled back (system chain).",
        (),
        ("from_revision", "to_revision", "phase", "error", "via"),
    ),
    EventSpec(
        EventCode.DEPLOYMENT_STARTED,
        "A deployment of a release began (system chain).",
        (),
        ("release_id", "git_sha", "strategy"),
    ),
    EventSpec(
        EventCode.DEPLOYMENT_PROMOTED,
        "A deployment moved to its next step or completed (system chain).",
        (),
        ("release_id", "step", "weight_percent"),
    ),
    EventSpec(
        EventCode.DEPLOYMENT_ROLLED_BACK,
        "A deployment was rolled back (system chain).",
        (),
        ("release_id", "step", "reason"),
    ),
    EventSpec(
        EventCode.DEPLOYMENT_STATE_CHANGED,
        "A deployment moved between states (created, pre_checks, awaiting_approval, rolling, "
        "promoted, rolled_back, failed); `by` is the operator or `keel` (system chain).",
        (),
        ("deployment_id", "environment", "release_id", "from_state", "to_state", "by", "reason"),
    ),
    EventSpec(
        EventCode.DEPLOYMENT_APPROVED,
        "An operator approved a deployment waiting at its environment's gate (system chain).",
        (),
        ("deployment_id", "environment", "by", "approvals", "required"),
    ),
    EventSpec(
        EventCode.DEPLOYMENT_CONTRACT_PHASE_CHANGED,
        "A promoted deployment's contract migrations moved between pending, running, applied "
        "and failed; `by` is the operator or `keel` (system chain).",
        (),
        ("deployment_id", "environment", "from_phase", "to_phase", "by", "reason"),
    ),
    EventSpec(
        EventCode.AUDIT_CHAINS_OPENED,
        "An organisation's audit log now has `chains` chains (KEEL_AUDIT_CHAINS_PER_ORG): "
        "recorded on its chain 0 in the transaction that opens the new ones, so `keel audit "
        "verify` can tell a missing chain from one never opened.",
        (),
        ("chains",),
    ),
)

REGISTRY: dict[EventCode, EventSpec] = {spec.code: spec for spec in _SPECS}


def spec_for(code: EventCode | str) -> EventSpec:
    return REGISTRY[EventCode(code)]


def describe() -> list[dict[str, object]]:
    """The registry as data (``keel audit codes``, the README table)."""
    return [
        {
            "code": spec.code.value,
            "meaning": spec.meaning,
            "identifiers": list(spec.identifiers),
            "fields": list(spec.fields),
        }
        for spec in _SPECS
    ]
