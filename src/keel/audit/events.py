"""The value a caller hands to the audit log: what happened, to whom, by whom.

Raw identifiers come in here and never go further than the
:class:`~keel.audit.recorder.Auditor`, which pseudonymises them before
anything is stored or logged. ``fields`` must be exactly the names the
registry lists for the code, with plain values; a value that looks like an
email address, an API token or an IP address is refused so that personal data
cannot slip into the log through a free-form field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from keel.audit.chain import FieldValue
from keel.audit.registry import EventCode, spec_for
from keel.errors import KeelError

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TOKEN_PREFIX = "keel_"  # noqa: S105 - the public prefix of API tokens, to refuse them
MAX_FIELD_LENGTH = 500
# An IPv4 address is ASCII digits and dots, an IPv6 one has colons: a value with
# neither is no address, and most fields (ids, names) need no parse to show it.
_IPV4_CHARACTERS = frozenset("0123456789.")


class AuditEventInvalid(KeelError):
    """An event that does not match its registry entry (a bug in the caller)."""

    title = "Invalid audit event"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    code: EventCode
    org_id: str | None = None  # whose chain; None for system events
    actor_id: str | None = None  # the user who acted
    subject_id: str | None = None  # the user acted upon (a recipient, a token's owner, …)
    token_id: str | None = None  # the API token used or affected (its id, never the token)
    ip: str | None = None
    fields: Mapping[str, FieldValue] = field(default_factory=dict)

    def check(self) -> None:
        spec = spec_for(self.code)
        unknown = set(self.fields) - set(spec.fields)
        if unknown:
            raise AuditEventInvalid(
                f"{self.code.value} has no field(s) {', '.join(sorted(unknown))}"
            )
        given = {
            "actor": self.actor_id,
            "subject": self.subject_id,
            "token": self.token_id,
            "ip": self.ip,
        }
        extra = [name for name, value in given.items() if value and name not in spec.identifiers]
        if extra:
            raise AuditEventInvalid(f"{self.code.value} carries no {', '.join(extra)}")
        for name, value in self.fields.items():
            if value is not None and not isinstance(value, str | int | bool):
                raise AuditEventInvalid(f"field {name} must be a string, number or boolean")
            if isinstance(value, str):
                _refuse_personal(name, value)


def _refuse_personal(name: str, value: str) -> None:
    if len(value) > MAX_FIELD_LENGTH:
        raise AuditEventInvalid(f"field {name} is longer than {MAX_FIELD_LENGTH} characters")
    # The pattern needs an "@": looking for it first spares the search, which tries
    # every starting position of a value that has none (8 µs for a UUID).
    if ("@" in value and _EMAIL.search(value)) or _TOKEN_PREFIX in value:
        raise AuditEventInvalid(f"field {name} looks like an email address or a token")
    if ":" not in value and not _IPV4_CHARACTERS.issuperset(value):
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return
    raise AuditEventInvalid(f"field {name} looks like an IP address; use the ip slot")
