"""API tokens: shown once, stored only as a keyed hash, checked with a short cache.

The hash is HMAC-SHA256 under the service secret, so a leaked table is useless
without the secret, and lookups stay a single indexed equality. Authenticated
principals are cached in-process for ``auth_cache_seconds`` to keep the
database off the hot path; a revocation made by this process evicts at once,
one made elsewhere takes effect within that interval. When an entry expires
under load, the requests that miss it together share one lookup (and one
audit event) instead of each running its own.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keel.clock import SYSTEM_CLOCK, Clock
from keel.db.engine import Database
from keel.db.tables import ApiToken, Org, User
from keel.domain.principal import Plan, Principal, Role
from keel.errors import NotFound, Unauthenticated
from keel.ids import new_id
from keel.keyed_hash import keyed_hash

TOKEN_PREFIX = "keel_"  # noqa: S105 - a public prefix, not a secret


def hash_token(secret: bytes, token: str) -> str:
    return keyed_hash(secret, token)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    user_id: str
    token: str  # the only moment the plain token exists


async def issue_token(
    session: AsyncSession,
    secret: bytes,
    user_id: str,
    *,
    name: str = "",
    clock: Clock = SYSTEM_CLOCK,
) -> IssuedToken:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        id=new_id(),
        user_id=user.id,
        org_id=user.org_id,
        token_hash=hash_token(secret, plain),
        prefix=plain[:12],
        name=name,
        created_at=clock.now(),
    )
    session.add(token)
    await session.flush()
    return IssuedToken(id=token.id, user_id=user.id, token=plain)


async def revoke_token(session: AsyncSession, token_id: str, *, clock: Clock = SYSTEM_CLOCK) -> str:
    """Revoke a token by id; returns its hash so a caller can evict it from caches."""
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is None:
        await session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(revoked_at=clock.now())
        )
    return token.token_hash


class AuthenticationObserver(Protocol):
    """Told of checks against the database and of refusals (the audit log)."""

    async def succeeded(self, principal: Principal, ip: str | None) -> None: ...

    def failed(self, reason: str, ip: str | None) -> None: ...


class Authenticator:
    def __init__(
        self,
        database: Database,
        secret: bytes,
        *,
        cache_seconds: float = 5.0,
        max_entries: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
        observer: AuthenticationObserver | None = None,
    ) -> None:
        self._database = database
        self._secret = secret
        self._ttl = cache_seconds
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._observer = observer
        self._loading: dict[str, asyncio.Future[Principal]] = {}

    def failed(self, reason: str, ip: str | None = None) -> None:
        """Count a refused credential (cheap: no I/O on the request path)."""
        if self._observer is not None:
            self._observer.failed(reason, ip)

    async def authenticate(self, token: str, *, ip: str | None = None) -> Principal:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthenticated("invalid or revoked token")
        token_hash = hash_token(self._secret, token)
        now = self._clock.monotonic()
        cached = self._cache.get(token_hash)
        if cached is not None and cached[1] > now:
            self._cache.move_to_end(token_hash)
            return cached[0]
        loading = self._loading.get(token_hash)
        if loading is not None:
            try:
                return await asyncio.shield(loading)
            except asyncio.CancelledError:
                if not loading.cancelled():
                    raise  # this request was cancelled, not the lookup it waited on
        return await self._check(token_hash, ip, now)

    async def _check(self, token_hash: str, ip: str | None, now: float) -> Principal:
        """The database check, its audit event and the cache entry; others missing the
        same token meanwhile wait for this one's outcome."""
        loading: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._loading[token_hash] = loading
        try:
            principal = await self._load(token_hash)
            if self._observer is not None:  # a database check, not a cache hit: audit it
                await self._observer.succeeded(principal, ip)
        except Exception as error:  # the waiters get the same refusal or outage
            loading.set_exception(error)
            loading.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        except BaseException:  # cancelled: each waiter then checks for itself
            loading.cancel()
            raise
        finally:
            if self._loading.get(token_hash) is loading:
                del self._loading[token_hash]
        if self._ttl > 0:
            self._cache[token_hash] = (principal, now + self._ttl)
            self._cache.move_to_end(token_hash)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        loading.set_result(principal)
        return principal

    def evict(self, token_hash: str) -> None:
        self._cache.pop(token_hash, None)

    async def _load(self, token_hash: str) -> Principal:
        query = (
            select(ApiToken.id, User.id, User.role, Org.id, Org.plan, Org.timezone)
            .join(User, User.id == ApiToken.user_id)
            .join(Org, Org.id == User.org_id)
            .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
        )
        rows = await self._database.rows(query)
        if not rows:
            raise Unauthenticated("invalid or revoked token")
        token_id, user_id, role, org_id, plan, timezone = tuple(rows[0])
        return Principal(
            user_id=user_id,
            org_id=org_id,
            role=Role(role),
            token_id=token_id,
            plan=Plan(plan),
            org_timezone=timezone,
        )
