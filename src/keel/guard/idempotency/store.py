"""The idempotency store seam: claims, outcomes and their lifecycle.

A key's row moves through an explicit state machine (``TRANSITIONS``):

- *absent → in flight* (**claim**): the first request inserts the row with its
  own random ``owner`` token and a lease (``locked_until``), in a short
  transaction of its own that commits before any work starts;
- *in flight → in flight* (**take over**): once the lease has passed, a retry
  may take the claim — the request that held it died or hangs. The lease is
  short (``KEEL_IDEMPOTENCY_LEASE_SECONDS``, 3 s), so a retry after a crash
  waits seconds, not a minute; the takeover is a compare-and-set on the owner
  token that was seen to expire, so of two takers exactly one wins;
- *in flight → in flight* (**extend**): the heartbeat of a request still
  running pushes its lease on every third of a lease, so a slow request (a
  large upload, a slow database) never loses its claim to a retry while it
  works — only a dead process stops beating;
- *in flight → completed* (**complete**): the outcome is written **inside the
  business transaction**, conditional on still owning the claim; if another
  request took the key over, the update matches no row, the completion raises
  and the business write rolls back with it;
- *in flight → completed* (**settle**): a refusal the handler decided while
  running (a 4xx, whose own transaction rolled back) is stored on its own;
- *in flight → absent* (**release**): a request that failed before its work or
  whose transaction rolled back gives the key back so the client may retry;
- *completed → absent* (**purge**) after the retention period, or
  *completed → in flight* (**reclaim**) when a request arrives for an expired
  key that was not yet purged.

Every write is conditional on the owner token, so a request can only ever
change the row it still holds. Time is an argument (``now``) everywhere.

The stores check their moves against ``TRANSITIONS`` (:func:`move`): the SQL
stores build each statement's ``state`` condition from the table and check
the state they read before a takeover; the memory store checks every move.
Three stores implement :class:`IdempotencyStore`: ``sqlite.py``,
``postgresql.py`` (``backends.store_for`` picks one for a database) and
``memory.py`` (for tests, shipped in ``keel.testing``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from keel.guard.idempotency.errors import IdempotencyStateError
from keel.guard.idempotency.keys import KeyRef


class KeyState(StrEnum):
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"


class Transition(StrEnum):
    CLAIM = "claim"
    TAKE_OVER = "take_over"
    EXTEND = "extend"
    COMPLETE = "complete"
    SETTLE = "settle"
    RELEASE = "release"
    PURGE = "purge"
    RECLAIM = "reclaim"


# (from, to) for each transition; ``None`` is "no row".
TRANSITIONS: dict[Transition, tuple[KeyState | None, KeyState | None]] = {
    Transition.CLAIM: (None, KeyState.IN_FLIGHT),
    Transition.TAKE_OVER: (KeyState.IN_FLIGHT, KeyState.IN_FLIGHT),
    Transition.EXTEND: (KeyState.IN_FLIGHT, KeyState.IN_FLIGHT),
    Transition.COMPLETE: (KeyState.IN_FLIGHT, KeyState.COMPLETED),
    Transition.SETTLE: (KeyState.IN_FLIGHT, KeyState.COMPLETED),
    Transition.RELEASE: (KeyState.IN_FLIGHT, None),
    Transition.PURGE: (KeyState.COMPLETED, None),
    Transition.RECLAIM: (KeyState.COMPLETED, KeyState.IN_FLIGHT),
}

# Which transition takes over an expired row, by the state it was read in.
TAKE_OVER_FROM: dict[KeyState, Transition] = {
    KeyState.IN_FLIGHT: Transition.TAKE_OVER,
    KeyState.COMPLETED: Transition.RECLAIM,
}


def move(transition: Transition, source: KeyState | None) -> KeyState | None:
    """The state ``transition`` leads to from ``source``; raises
    :class:`IdempotencyStateError` if the table has no such move (one dict lookup)."""
    expected, target = TRANSITIONS[transition]
    if source is not expected:
        raise IdempotencyStateError(
            f"the key cannot {transition.value} from {source.value if source else 'absent'}"
        )
    return target


def take_over(source: str) -> Transition:
    """The transition that takes an expired row read in state ``source``, checked."""
    state = KeyState(source)
    transition = TAKE_OVER_FROM[state]
    move(transition, state)
    return transition


def source_of(transition: Transition) -> str:
    """The state (its stored value) a transition starts from; SQL ``WHERE`` clauses use it."""
    source = TRANSITIONS[transition][0]
    if source is None:
        raise IdempotencyStateError(f"{transition.value} starts from no row")
    return source.value


def target_of(transition: Transition) -> str:
    """The state (its stored value) a transition ends in; SQL ``SET`` clauses use it."""
    target = TRANSITIONS[transition][1]
    if target is None:
        raise IdempotencyStateError(f"{transition.value} ends in no row")
    return target.value


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a replay sends back: the status, allow-listed headers and the body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ClaimResult(StrEnum):
    CLAIMED = "claimed"  # a new row: this request runs
    TAKEN_OVER = "taken_over"  # an expired claim or an expired outcome: this request runs
    IN_FLIGHT = "in_flight"  # another request holds a live claim
    COMPLETED = "completed"  # an outcome is stored
    ABSENT = "absent"  # no row at all (only ``lookup`` answers this; a claim never does)


def standing(
    state: str, locked_until: datetime, expires_at: datetime, now: datetime
) -> ClaimResult | None:
    """What a row in ``state`` says at ``now``: a live outcome (``COMPLETED``), another
    request's live claim (``IN_FLIGHT``), or ``None`` — it has expired and may be taken."""
    if state == KeyState.COMPLETED:
        return ClaimResult.COMPLETED if expires_at > now else None
    return ClaimResult.IN_FLIGHT if locked_until > now else None


@dataclass(frozen=True, slots=True)
class Claim:
    result: ClaimResult
    fingerprint: str | None = None  # the stored one, when another request holds the key
    response: StoredResponse | None = None
    locked_until: datetime | None = None

    @property
    def owned(self) -> bool:
        return self.result in (ClaimResult.CLAIMED, ClaimResult.TAKEN_OVER)

    def retry_after(self, now: datetime) -> int:
        """Whole seconds until the holder's lease ends (at least 1): when a retry of an
        in-flight key can next learn something — the outcome, or that the holder died.

        Rounded up, so a client that waits this long arrives after the lease, not
        just before it; a live holder's heartbeat will have moved the lease on by
        then, and the retry is told the new remainder."""
        if self.locked_until is None:
            return 1
        return max(1, math.ceil((self.locked_until - now).total_seconds()))


class IdempotencyStore(Protocol):
    async def claim(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        now: datetime,
        seen_absent: bool = False,
    ) -> Claim:
        """Take the key for this request, or say who has it (short transaction of its own).

        ``seen_absent``: the replay step's ``lookup`` found no row for the key
        moments ago, so a store that reads before inserting may insert at once
        (a row inserted since makes the insert do nothing; the store then reads)."""
        ...

    async def complete(
        self,
        session: AsyncSession,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str,
        response: StoredResponse,
        now: datetime,
    ) -> None:
        """Store the outcome in the caller's transaction; raises ``IdempotencyLeaseLost``."""
        ...

    async def lookup(self, ref: KeyRef, *, now: datetime) -> Claim | None:
        """What holds the key now — a live outcome (``COMPLETED``) or claim
        (``IN_FLIGHT``) — without taking it; ``ABSENT`` if there is no row at
        all; ``None`` if the row there is expired."""
        ...

    async def settle(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        response: StoredResponse,
        now: datetime,
    ) -> bool:
        """Store a refusal decided while running, in a transaction of its own."""
        ...

    async def extend(self, ref: KeyRef, *, owner: str, now: datetime) -> bool:
        """Push the lease of a claim this request still holds to ``now`` + lease; ``False``
        if it holds none (taken over, or already completed)."""
        ...

    async def release(self, ref: KeyRef, *, owner: str) -> bool:
        """Give back a claim this request still holds; a stored outcome is never removed."""
        ...

    async def purge_expired(self, now: datetime) -> int:
        """Delete outcomes past their retention and abandoned claims; returns how many."""
        ...
