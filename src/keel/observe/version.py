"""What exactly is running: version, git sha, release id, schema revision, settings fingerprint.

The parity check compares these between environments. The fingerprint lists
the names of the non-secret settings and a keyed hash of their values (each
one, and all together), so two environments can be compared without either
revealing a value. The key is ``KEEL_FINGERPRINT_KEY`` (shared by the
environments being compared), else the service secret.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from keel.keyed_hash import derive_key, keyed_hash
from keel.observe.metrics import request_histogram
from keel.settings import Settings
from keel.slo import RuleFiles, build_rules

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
    return {"names": sorted(values), "hash": overall, "settings": per_setting}


def slo_rule_files(settings: Settings) -> RuleFiles:
    """The SLO rules this environment alerts with: its SLO file on its own bucket edges."""
    return build_rules(settings.slo_file, request_histogram(settings.slo_latency_seconds))
