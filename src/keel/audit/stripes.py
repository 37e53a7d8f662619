"""An organisation's audit log as several chains (stripes), and how they are named.

One chain per organisation serialised the organisation's writes: every write
holds the chain head's row lock from its append until its COMMIT returns, WAL
flush included, so one organisation could not commit more than one write per
flush. With ``KEEL_AUDIT_CHAINS_PER_ORG`` chains, concurrent writers of one
organisation each take a free head (PostgreSQL ``SKIP LOCKED``) and their
commits share the flush. Each chain is a whole chain as before: gap-free
``seq``, hash-linked, sealed by its own signed digests.

A stripe's number lives in its chain id, which every event's hash covers:
chain 0 keeps the organisation's pseudonym (so every chain recorded before
stripes is its organisation's chain 0, unchanged), chain ``n`` is
``<pseudonym>/<n>``. Key ids cannot hold ``/`` (``[A-Za-z0-9_-]``) and
neither can the hex digest, so the split is unambiguous. Chains beyond 0 are
opened in one transaction that also appends ``audit.chains_opened`` to chain
0, so ``verify`` knows how many chains each organisation must have: deleting a
whole chain of a group is detected, not only an event inside one.
"""

from __future__ import annotations

from collections.abc import Iterable

from keel.audit.pseudonym import KeyRing

MAX_CHAINS_PER_ORG = 64
"""The ceiling of ``KEEL_AUDIT_CHAINS_PER_ORG``: readers look for this many per organisation."""

SEPARATOR = "/"


def chain_id(base: str, number: int) -> str:
    """The id of chain ``number`` of the group whose chain 0 is ``base``."""
    return base if number == 0 else f"{base}{SEPARATOR}{number}"


def split(chain: str) -> tuple[str, int]:
    """``(base, number)`` of a chain id (``system`` and pre-stripe ids are chain 0)."""
    base, separator, number = chain.rpartition(SEPARATOR)
    if not separator or not number.isdecimal():
        return chain, 0
    return base, int(number)


def group(bases: Iterable[str], count: int) -> list[str]:
    """Chains ``0 .. count - 1`` under each base (an organisation's name under every key)."""
    return [chain_id(base, number) for base in bases for number in range(count)]


def every_chain(keys: KeyRing, org_id: str) -> list[str]:
    """Every id one of the organisation's chains may have, under any key and any count it
    was ever given: what readers (search, export, verify, digest) look for."""
    return group(keys.candidates("org", org_id), MAX_CHAINS_PER_ORG)
