"""A :class:`TcpProxy` on its own event loop thread, for tests that drive real processes.

Starting and waiting for a ``keel serve`` process blocks the test's thread; a proxy on the
test's own loop would stop forwarding meanwhile (and the server's start-up, which talks
to Redis and the database through it, would see an outage that is not there). On a
thread of its own the proxy forwards whatever the test is doing, and ``cut()`` /
``restore()`` are plain calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tests.support.proxy import TcpProxy

T = TypeVar("T")


class ThreadedProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._proxy = TcpProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._proxy.port

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    def start(self) -> ThreadedProxy:
        self._thread.start()
        self._run(self._proxy.start())
        return self

    def cut(self) -> None:
        self._run(self._proxy.cut())

    def restore(self) -> None:
        self._run(self._proxy.restore())

    def stop(self) -> None:
        try:
            self._run(self._proxy.cut())
            self._run(self._drain())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    @staticmethod
    async def _drain() -> None:
        """Let the pipes see their closed sockets, then cancel whatever is left."""
        await asyncio.sleep(0.1)
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        # Closed transports release their sockets in a callback on this loop: let it run
        # before the loop stops, or they are reported (and leaked) as unclosed.
        await asyncio.sleep(0.05)


@contextmanager
def threaded_proxy(target_host: str, target_port: int) -> Iterator[ThreadedProxy]:
    proxy = ThreadedProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
