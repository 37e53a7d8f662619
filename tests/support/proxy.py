"""A small TCP proxy a test can put in front of PostgreSQL or Redis and cut.

Cutting the proxy (closing its listener and every open connection) looks to
Keel exactly like the dependency going away, without touching the shared
server that other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            if self._server is None:  # cut while this connection was being made
                return
            self._writers.update((writer, up_writer))

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            # Whatever ended this connection (EOF, a cut, a refused upstream, cancellation
            # when the proxy stops), both sockets are closed here and nowhere is one left open.
            for each in (writer, up_writer):
                if each is not None:
                    self._writers.discard(each)
                    each.close()

    async def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()
