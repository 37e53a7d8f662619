"""A small TCP proxy a test can put in front of PostgreSQL or Redis and cut.

Cutting the proxy (closing its listener and every open connection) looks to
Keel exactly like the dependency going away, without touching the shared
server that other tests use.

The proxy accepts on its own listening socket rather than through
``asyncio.start_server``: on Python 3.11 a connection the server had
accepted but not yet wrapped when ``Server.close()`` ran fails an assertion
inside asyncio (``Server._attach``), which asyncio swallows, leaving that socket
and its half-built transport open until the garbage collector reports them —
in the middle of some later test. Here every accepted socket is ours from the
moment ``accept`` returns it, so a cut closes it whatever stage it reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        # Each client's task, and its accepted socket until a stream owns it.
        self._clients: dict[asyncio.Task[None], socket.socket] = {}
        self._owned: set[socket.socket] = set()

    async def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept(listener))
        return self

    async def _accept(self, listener: socket.socket) -> None:
        """Wait for the listener to be readable, then accept synchronously.

        Not ``loop.sock_accept``: a task cancelled (by a cut) just after that call
        accepted a connection loses the accepted socket with the await's result.
        Here the only await is for readability; an accepted socket is handed to
        its own task, tracked, before this task can be interrupted again.
        """
        loop = asyncio.get_running_loop()
        while True:
            readable = loop.create_future()
            loop.add_reader(listener.fileno(), _set_once, readable)
            try:
                await readable
            finally:
                loop.remove_reader(listener.fileno())
            while True:
                try:
                    client, _ = listener.accept()
                except BlockingIOError:
                    break
                client.setblocking(False)
                task = loop.create_task(self._handle(client))
                self._clients[task] = client
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        client = self._clients.pop(task, None)
        if client is None:
            return
        if client not in self._owned:
            # Cancelled before a stream took the socket (possibly before the task's
            # first step, when no ``finally`` of it ever runs): close it here.
            client.close()
        self._owned.discard(client)

    async def _handle(self, client: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        up_writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=client)
            self._owned.add(client)  # the stream closes it from now on
            up_reader, up_writer = await asyncio.open_connection(*self.target)

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            # Whatever ended this connection (EOF, a cut, a refused upstream), both
            # streams are closed here and nowhere is one left open.
            for each in (writer, up_writer):
                if each is not None:
                    each.close()

    async def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        # Closed streams release their sockets in a callback on this loop: let it run.
        await asyncio.sleep(0)

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
