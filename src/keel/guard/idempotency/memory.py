"""The idempotency store in memory: the same contract, no database (for tests).

One process, one event loop: every move runs without awaiting, so each is
atomic the way a row lock makes it atomic in SQL — of many concurrent claims
exactly one wins, of many takers of an expired claim exactly one. Every move
is checked against the claim state machine (``store.move``).

A completion joins the caller's business transaction as the SQL stores' does:
it is checked at once (a lost claim raises ``IdempotencyLeaseLost``), held as
pending — the key stays *in flight* and no takeover can slip in, as the row
lock holds one off in SQL — and applied when the session commits; a rollback
drops it. Savepoints are not tracked: the outermost transaction decides.
Shipped in ``keel.testing`` for users' tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from keel.guard.idempotency.errors import IdempotencyLeaseLost, IdempotencyStateError
from keel.guard.idempotency.keys import KeyRef
from keel.guard.idempotency.store import (
    Claim,
    ClaimResult,
    KeyState,
    StoredResponse,
    Transition,
    move,
    standing,
    take_over,
)

PENDING = "keel.idempotency.pending"  # Session.info: completions waiting for the commit

_Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class _Row:
    state: KeyState
    owner: str
    fingerprint: str | None
    locked_until: datetime
    expires_at: datetime
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A completion waiting for its business transaction: what to do on commit, and
    what to do once the transaction has ended either way."""

    commit: Callable[[], None]
    end: Callable[[], None]


def _key(ref: KeyRef) -> _Key:
    return (ref.user_id, ref.operation, ref.key)


def _into(transition: Transition, source: KeyState | None) -> KeyState:
    """``move``, for the transitions that end in a row."""
    target = move(transition, source)
    if target is None:
        raise IdempotencyStateError(f"{transition.value} removes the row")
    return target


class MemoryIdempotencyStore:
    """:class:`~keel.guard.idempotency.store.IdempotencyStore` in a dict."""

    def __init__(self, *, lease_seconds: float, retention_seconds: float) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self.retention = timedelta(seconds=retention_seconds)
        self._rows: dict[_Key, _Row] = {}
        self._completing: set[_Key] = set()  # completed in a transaction not yet committed

    def __len__(self) -> int:
        return len(self._rows)

    def _claimed(
        self,
        key: _Key,
        transition: Transition,
        source: _Row | None,
        owner: str,
        fingerprint: str | None,
        now: datetime,
    ) -> None:
        self._rows[key] = _Row(
            state=_into(transition, source.state if source else None),
            owner=owner,
            fingerprint=fingerprint,
            locked_until=now + self.lease,
            expires_at=now + max(self.retention, self.lease),
        )

    async def claim(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        now: datetime,
        seen_absent: bool = False,
    ) -> Claim:
        key = _key(ref)
        row = self._rows.get(key)
        if row is None:
            self._claimed(key, Transition.CLAIM, None, owner, fingerprint, now)
            return Claim(ClaimResult.CLAIMED)
        found = _held(row, now)
        if found is not None:
            return found
        if key in self._completing:  # SQL would wait on the row lock: report it busy
            return Claim(ClaimResult.IN_FLIGHT, fingerprint=row.fingerprint, locked_until=now)
        self._claimed(key, take_over(row.state), row, owner, fingerprint, now)
        return Claim(ClaimResult.TAKEN_OVER)

    async def lookup(self, ref: KeyRef, *, now: datetime) -> Claim | None:
        row = self._rows.get(_key(ref))
        return Claim(ClaimResult.ABSENT) if row is None else _held(row, now)

    def _holds(self, key: _Key, owner: str) -> _Row | None:
        """The row if ``owner`` still holds its claim and no completion is pending."""
        row = self._rows.get(key)
        if row is None or row.owner != owner or row.state is not KeyState.IN_FLIGHT:
            return None
        return None if key in self._completing else row

    def _completed(
        self,
        transition: Transition,
        row: _Row,
        fingerprint: str | None,
        response: StoredResponse,
        now: datetime,
    ) -> _Row:
        return replace(
            row,
            state=_into(transition, row.state),
            fingerprint=fingerprint,
            expires_at=now + self.retention,
            response=response,
        )

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
        key = _key(ref)
        row = self._holds(key, owner)
        if row is None:
            raise IdempotencyLeaseLost.taken_over()
        done = self._completed(Transition.COMPLETE, row, fingerprint, response, now)
        self._completing.add(key)
        _pending(session).append(
            _Pending(
                commit=partial(self._rows.__setitem__, key, done),
                end=partial(self._completing.discard, key),
            )
        )

    async def settle(
        self,
        ref: KeyRef,
        *,
        owner: str,
        fingerprint: str | None,
        response: StoredResponse,
        now: datetime,
    ) -> bool:
        key = _key(ref)
        row = self._holds(key, owner)
        if row is None:
            return False
        self._rows[key] = self._completed(Transition.SETTLE, row, fingerprint, response, now)
        return True

    async def extend(self, ref: KeyRef, *, owner: str, now: datetime) -> bool:
        key = _key(ref)
        row = self._rows.get(key)
        if row is None or row.owner != owner or row.state is not KeyState.IN_FLIGHT:
            return False
        self._rows[key] = replace(
            row, state=_into(Transition.EXTEND, row.state), locked_until=now + self.lease
        )
        return True

    async def release(self, ref: KeyRef, *, owner: str) -> bool:
        key = _key(ref)
        row = self._holds(key, owner)
        if row is None:
            return False
        move(Transition.RELEASE, row.state)
        del self._rows[key]
        return True

    async def purge_expired(self, now: datetime) -> int:
        """Outcomes past their retention (PURGE) and claims abandoned past it (RELEASE)."""
        expired = {
            key: Transition.PURGE if row.state is KeyState.COMPLETED else Transition.RELEASE
            for key, row in self._rows.items()
            if key not in self._completing
            and row.expires_at <= now
            and (row.state is KeyState.COMPLETED or row.locked_until <= now)
        }
        for key, transition in expired.items():
            move(transition, self._rows[key].state)
        for key in expired:
            del self._rows[key]
        return len(expired)


def _held(row: _Row, now: datetime) -> Claim | None:
    result = standing(row.state, row.locked_until, row.expires_at, now)
    if result is ClaimResult.COMPLETED:
        return Claim(result, fingerprint=row.fingerprint, response=row.response)
    if result is ClaimResult.IN_FLIGHT:
        return Claim(result, fingerprint=row.fingerprint, locked_until=row.locked_until)
    return None


def _pending(session: AsyncSession) -> list[_Pending]:
    """The completions waiting for ``session``'s transaction; the listeners that apply
    or drop them are installed once per session."""
    sync = session.sync_session
    found: list[_Pending] | None = sync.info.get(PENDING)
    if found is None:
        found = []
        sync.info[PENDING] = found
        event.listen(sync, "after_commit", _on_commit)
        event.listen(sync, "after_transaction_end", _on_end)
    return found


def _on_commit(session: Session) -> None:
    pending: list[_Pending] = session.info[PENDING]
    for completion in pending:
        completion.commit()


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint or subtransaction: the outermost one decides
    pending: list[_Pending] = session.info[PENDING]
    # After a commit the rows are in place; otherwise the completions roll back.
    for completion in pending:
        completion.end()
    pending.clear()
