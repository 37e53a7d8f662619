"""PostgreSQL ``LISTEN keel_jobs`` on a dedicated asyncpg connection.

A notification's payload is a queue name; the listener sets that queue's wake-up
event. While the connection is down the worker falls back to short polling (see
:attr:`Listener.connected`) and the listener reconnects with capped backoff.
A pooled connection cannot listen (the pool resets it on return), hence the
dedicated one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import asyncpg
import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger(__name__)

# What ends a listening connection, to be reconnected after a backoff: the server's
# errors (a restart's 57P01), a lost socket, and asyncpg's protocol state broken by a
# FATAL that arrived between two statements (``InternalClientError``).
_CONNECTION_TROUBLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

CHANNEL = "keel_jobs"


def asyncpg_dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    def __init__(self, database_url: str, wake: Mapping[str, asyncio.Event]) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._wake = wake
        self._connection: asyncpg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        event = self._wake.get(payload)
        if event is not None:
            event.set()

    async def run(self, stop: asyncio.Event, *, check_seconds: float = 2.0) -> None:
        """Keep a listening connection until ``stop`` is set."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self._connection = await asyncpg.connect(self._dsn, timeout=5)
                await self._connection.add_listener(CHANNEL, self._notified)
                log.info("job_listener_connected")
                backoff = 0.5
                for event in self._wake.values():  # catch up on anything sent while away
                    event.set()
                while not stop.is_set() and self.connected:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=check_seconds)
                    except TimeoutError:
                        await self._connection.execute("SELECT 1")
            except _CONNECTION_TROUBLE as error:
                log.warning("job_listener_down", error=type(error).__name__, retry_in=backoff)
            finally:
                await self._close()
            if not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    backoff = min(backoff * 2, 10.0)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except _CONNECTION_TROUBLE:
                connection.terminate()
