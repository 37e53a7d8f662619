"""The hash chain and digest arithmetic: pure functions, no I/O.

An event's hash is SHA-256 over a canonical serialisation of every stored
field — an explicit list, as sorted-key JSON with no whitespace, times as
ISO 8601 UTC with microseconds — including the previous event's hash. So
editing any field of any row changes its hash; deleting, inserting or
reordering rows breaks the ``prev_hash`` link or the gap-free ``seq``.

A digest signs ``(chain, first_seq, last_seq, prev_hash, last_hash,
previous_digest_hash, signed_at, signing_key_id)``: through the chain that
pins every event in the range, and through ``previous_digest_hash`` every
earlier digest (CloudTrail's ``previousDigestSignature``). Rewriting a chain
and recomputing all its hashes therefore still fails on the signatures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = "0" * 64
FieldValue = str | int | bool | None


# ``json.dumps`` with these options builds an encoder on every call; an append
# encodes each of an event's two dozen keys and values (``around_head``), so one
# encoder serves them all: the same text (a test holds it to ``json.dumps``), about
# a sixth of the time for a string.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: object) -> str:
    return _CANONICAL.encode(value)


_STORED_FORM = "%Y-%m-%dT%H:%M:%S.%fZ"


def timestamp(moment: datetime) -> str:
    """``moment`` as the hashes cover it: ``2026-12-03T20:02:09.123456Z``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are refused: pass an aware UTC datetime")
    utc = moment.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y does not pad these to four digits; isoformat would
        return utc.strftime(_STORED_FORM)
    # isoformat renders the same text as the strftime form, 1.5 µs against 2.6 (every
    # audit append formats one or two); its "+00:00" becomes the "Z".
    return f"{utc.isoformat(timespec='microseconds')[:-6]}Z"


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """Exactly the fields an event's hash covers."""

    id: str
    chain_id: str
    seq: int
    occurred_at: datetime
    code: str
    key_id: str
    actor: str | None
    subject: str | None
    token: str | None
    ip: str | None
    fields: str  # canonical JSON of the event's fields
    prev_hash: str

    def canonical(self) -> bytes:
        members = {
            **_unchained_members(self),
            "chain_id": self.chain_id,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
        }
        return canonical_json(members).encode()

    def hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def _unchained_members(event: ChainedEvent | UnchainedEvent) -> dict[str, object]:
    """The hashed members an event has before its chain's head is read (format ``v`` 1)."""
    return {
        "v": 1,
        "id": event.id,
        "occurred_at": timestamp(event.occurred_at),
        "code": event.code,
        "key_id": event.key_id,
        "actor": event.actor,
        "subject": event.subject,
        "token": event.token,
        "ip": event.ip,
        "fields": event.fields,
    }


HEAD_VALUES = ("chain_id", "prev_hash", "seq")
"""The values an event takes from its chain's head, in the canonical text's (sorted) order."""


@dataclass(frozen=True, slots=True)
class UnchainedEvent:
    """An event before its chain's head is read: every hashed field but ``HEAD_VALUES``.

    The database can then chain it in the statement that locks the head: the
    canonical text is ``parts[0] + chain_id + parts[1] + prev_hash + parts[2]
    + seq + parts[3]``, with chain id and previous hash as JSON strings and
    ``seq`` as a JSON number (:meth:`around_head`), so the hash is SHA-256 of
    that text — the same bytes :meth:`ChainedEvent.canonical` gives.
    """

    id: str
    occurred_at: datetime
    code: str
    key_id: str
    actor: str | None
    subject: str | None
    token: str | None
    ip: str | None
    fields: str

    def chained(self, *, chain_id: str, seq: int, prev_hash: str) -> ChainedEvent:
        return ChainedEvent(
            id=self.id,
            chain_id=chain_id,
            seq=seq,
            occurred_at=self.occurred_at,
            code=self.code,
            key_id=self.key_id,
            actor=self.actor,
            subject=self.subject,
            token=self.token,
            ip=self.ip,
            fields=self.fields,
            prev_hash=prev_hash,
        )

    def around_head(self) -> tuple[str, str, str, str]:
        """The canonical text split where ``HEAD_VALUES`` go (sorted-key JSON of flat
        scalars is its members joined in key order, which this builds piecewise)."""
        known = _unchained_members(self)
        parts: list[str] = []
        text = "{"
        for index, name in enumerate(sorted([*known, *HEAD_VALUES])):
            text += ("," if index else "") + canonical_json(name) + ":"
            if name in HEAD_VALUES:
                parts.append(text)
                text = ""
            else:
                text += canonical_json(known[name])
        first, second, third = parts
        return first, second, third, text + "}"


def encode_fields(fields: Mapping[str, FieldValue]) -> str:
    return canonical_json(dict(fields))


@dataclass(frozen=True, slots=True)
class DigestBody:
    """Exactly what a digest's signature covers."""

    chain_id: str
    first_seq: int
    last_seq: int
    prev_hash: str
    last_hash: str
    previous_digest_hash: str
    signed_at: datetime
    signing_key_id: str

    def canonical(self) -> bytes:
        return canonical_json(
            {
                "v": 1,
                "chain_id": self.chain_id,
                "first_seq": self.first_seq,
                "last_seq": self.last_seq,
                "prev_hash": self.prev_hash,
                "last_hash": self.last_hash,
                "previous_digest_hash": self.previous_digest_hash,
                "signed_at": timestamp(self.signed_at),
                "signing_key_id": self.signing_key_id,
            }
        ).encode()


def digest_hash(body: DigestBody, signature_hex: str) -> str:
    """What the next digest points back to: the body and its signature together."""
    return hashlib.sha256(body.canonical() + b"\x00" + signature_hex.encode()).hexdigest()
