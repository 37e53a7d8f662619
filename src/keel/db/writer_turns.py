"""SQLite's one writer, queued in the process instead of on the file lock.

SQLite admits one writer per database file. A connection that asks for the
write lock while another holds it (``BEGIN IMMEDIATE``, or a lone ``INSERT``)
waits in SQLite's busy handler, which does not queue: it sleeps and polls
again, in growing steps (1, 2, 5, 10 … up to 100 ms between tries), and
whoever polls at the moment the lock comes free wins it. Under load a writer
that has waited longest sleeps longest and keeps losing to fresh arrivals: the
lock sits free for most of each sleep, and the tail latency grows to seconds
(bench/RESULTS.md, issue 19). Every waiter also holds a pooled connection and
its thread while it sleeps.

:class:`WriterTurns` puts the writers of one process in line first, in arrival
order (an ``asyncio.Lock`` wakes its waiters first come, first served, and a
newcomer never takes a free lock ahead of them). The one writer at the head
then finds the file lock free, unless another *process* holds it (a second
``keel serve`` worker, ``keel worker``, the CLI): that case still waits on
``busy_timeout`` as before. Waiting for a turn is bounded by the same timeout,
and running out of it raises ``TimeoutError``, which the database guard
answers as the busy file lock was answered: 503 ``database-unavailable``.

A turn is held exactly while SQLite's write lock would be: a transaction takes
it right before its ``BEGIN IMMEDIATE`` (which the session sends at its first
statement, not when the block opens) and gives it back when its COMMIT or
ROLLBACK has returned (``sqlite_driver.OneHopConnection``); a lone write
statement holds it around that statement (``Database.alone``). A turn is not
reentrant: a write begun inside another write would wait for itself — as it
waited ``busy_timeout`` on SQLite's own lock before, and ends the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriterTurns:
    """One write transaction at a time in this process, first come first served."""

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait (at most the timeout) until no other writer of this process runs."""
        lock = self._lock_of_running_loop()
        if not lock.locked() and not getattr(lock, "_waiters", None):
            # Free, and nobody queued for it: taken at once, without the timer an
            # ``asyncio.timeout`` schedules and cancels (a measurable share of a keyed
            # POST on SQLite, where every write takes a turn).
            await lock.acquire()
            return
        async with asyncio.timeout(self._timeout):
            await lock.acquire()

    def release(self) -> None:
        """The next writer's turn (whoever holds the turn releases it, once)."""
        self._lock.release()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """:meth:`acquire` and :meth:`release` around a block."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def _lock_of_running_loop(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to the loop it first waited on; a Database
        # outlives loops in tools and tests (one ``asyncio.run`` after another).
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock


__all__ = ["WriterTurns"]
