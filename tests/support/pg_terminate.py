"""Killing a PostgreSQL backend under a pooled connection, the two ways it happens.

A real ``pg_terminate_backend`` (no fake drivers): either the event loop reads the
server's EOF before the connection is used again (between two requests), or it
has not yet (the moments right after a restart or a cut), and the next statement
on the connection is the first to find out.
"""

from __future__ import annotations

import asyncio
import threading

import asyncpg


async def terminate_and_wait(dsn: str, pid: int) -> None:
    """Terminate ``pid`` and return once the server has no such backend left."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(500):
            if not await admin.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"backend {pid} did not exit")
    finally:
        await admin.close()


def terminate_behind_the_loops_back(dsn: str, pid: int) -> None:
    """Terminate ``pid`` from another thread while this thread's event loop is blocked.

    The server's EOF then sits unread on the pooled connection's socket: asyncpg
    still reports the connection open, exactly as in the moments after a restart.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(terminate_and_wait(dsn, pid))
        except BaseException as error:
            failure.append(error)  # re-raised in the caller's thread

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
