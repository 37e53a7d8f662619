"""What exactly is running: version, git sha, release id, schema revision, settings fingerprint.

``keel parity`` compares these between environments. The fingerprint lists
the names of the non-secret settings and a keyed hash of their values (each
one, and all together), so two environments can be compared without either
revealing a value. The key is ``KEEL_FINGERPRINT_KEY`` (shared by the
environments being compared), else the service secret; ``key_id`` is a keyed
hash of a constant, so a comparison can tell "the values differ" from "the keys
do".

Beside them: the kind of each dependency (the URL's scheme, never its host or
credentials), the hash of the rate-limit policy in force, and the hash of the
SLO rules this environment would alert with (``keel slo rules``) — ``null``
when its SLO file is refused, which ``keel parity`` reports as a difference.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from pydantic import BaseModel, SecretStr

from keel.errors import KeelError
from keel.guard.ratelimit import policy_from
from keel.keyed_hash import derive_key, keyed_hash
from keel.observe.metrics import request_histogram
from keel.resilience.wiring import breaker_store_url
from keel.settings import Settings
from keel.slo import RuleFiles, build_rules, parse_objectives
from keel.slo.rules import render_rules, rules_hash
from keel.slo.spec import RequestHistogram, read_slo_file

_NEVER_FINGERPRINTED = frozenset({"fingerprint_key", "secret_key"})


def fingerprint_key(settings: Settings) -> bytes:
    key = settings.fingerprint_key or settings.secret_key
    return derive_key(key.get_secret_value().encode(), b"keel-settings-fingerprint-v1")


def settings_fingerprint(settings: Settings) -> dict[str, Any]:
    key = fingerprint_key(settings)
    values: dict[str, str] = {}
    for name in sorted(type(settings).model_fields):
        value = getattr(settings, name)
        if name in _NEVER_FINGERPRINTED or isinstance(value, SecretStr):
            continue
        values[name] = json.dumps(value, default=str, sort_keys=True)
    per_setting = {name: keyed_hash(key, text, length=16) for name, text in values.items()}
    overall = keyed_hash(key, json.dumps(per_setting, sort_keys=True), length=32)
    return {
        "names": sorted(values),
        "hash": overall,
        "settings": per_setting,
        "key_id": keyed_hash(key, "keel-fingerprint-key-id", length=16),
    }


def _scheme(url: str) -> str:
    """``postgresql+asyncpg://user:pw@host/db`` → ``postgresql``: the kind, nothing else."""
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def dependency_types(settings: Settings) -> dict[str, str]:
    """Which kind of each dependency this environment uses (``none`` when it has none)."""
    return {
        "database": _scheme(settings.database_url),
        "redis": _scheme(settings.redis_url) if settings.redis_url else "none",
        "breaker_store": _scheme(breaker_store_url(settings)),
        "storage": "local",  # the one blob store Keel has (keel.storage.local)
        "tracing": "otlp" if settings.otel_endpoint else "none",
    }


def limit_policy_hash(settings: Settings) -> str:
    """SHA-256 of the rate-limit policy in force, as validated data (comments do not count)."""
    policy = policy_from(settings.ratelimit_policy)
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def slo_rule_files(settings: Settings) -> RuleFiles:
    """The SLO rules this environment alerts with: its SLO file on its own bucket edges."""
    return build_rules(settings.slo_file, request_histogram(settings.slo_latency_seconds))


def slo_rules_hash(settings: Settings) -> str | None:
    """The hash of the rules ``slo_rule_files`` would write; ``None`` if the file is refused."""
    try:
        text, source = read_slo_file(settings.slo_file)
        return _rules_hash(text, source, request_histogram(settings.slo_latency_seconds))
    except KeelError:
        return None


@functools.lru_cache(maxsize=16)
def _rules_hash(text: str, source: str, histogram: RequestHistogram) -> str:
    # /version answers this on every call; rendering takes tens of milliseconds of the
    # event loop, so each (file, bucket edges) is rendered once.
    return rules_hash(render_rules(parse_objectives(text, histogram, source=source), histogram))


class SettingsFingerprint(BaseModel):
    names: list[str]
    hash: str
    settings: dict[str, str]
    key_id: str


class ReleaseInfo(BaseModel):
    """The release this process is, as ``keel deploy`` records it: a deployment's
    orchestrator reads it to know that a version group runs the release it deploys."""

    version: str
    git_sha: str
    migration_head: str | None


class VersionInfo(BaseModel):
    """The body of ``/version``: what ``keel parity`` compares."""

    version: str
    git_sha: str
    release: ReleaseInfo
    release_id: str
    service_id: str
    schema_revision: str | None
    schema_head: str | None
    settings_fingerprint: SettingsFingerprint
    dependencies: dict[str, str]
    limit_policy_hash: str
    slo_rules_hash: str | None
