"""A proxy in front of PostgreSQL that can play a server restart, at the wire protocol.

Cutting a TCP proxy (``proxy.py``) shows Keel refused connections. A PostgreSQL that
restarts says more: it ends every session with ``FATAL 57P01 terminating connection
due to administrator command`` and, while it shuts down and starts up again, answers
each new connection's startup message with ``FATAL 57P03 the database system is
starting up`` (or "is shutting down", "is not yet accepting connections": one
SQLSTATE) and closes it. Drivers turn those into their own error types
(asyncpg's ``AdminShutdownError``, ``CannotConnectNowError``), which SQLAlchemy
then wraps — the errors Keel must answer with 503, not 500.

:class:`PgRestartProxy` forwards to the real server until :meth:`shut_down`: then it
sends 57P01 on every established session (at a message boundary, as the server
does) and closes it, and answers every new connection as a starting server with
57P03, until :meth:`start_up`. The shared PostgreSQL is never touched.

The wire protocol parts (PostgreSQL's "Frontend/Backend Protocol", chapter 55):
a startup packet is ``Int32 length, Int32 code, …``; ``SSLRequest`` (code 80877103)
and ``GSSENCRequest`` (80877104) are answered with the single byte ``N`` (refused:
go on in plain text), after which the real startup message follows. The proxy answers
those itself, so everything the server sends is framed messages from the start —
``Byte1 type, Int32 length, payload`` — and the server-to-client pipe forwards whole
messages only, which is what lets a 57P01 be slipped in between two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

ADMIN_SHUTDOWN = ("57P01", "terminating connection due to administrator command")
STARTING_UP = ("57P03", "the database system is starting up")


def error_response(sqlstate: str, message: str) -> bytes:
    """A FATAL ``ErrorResponse`` ('E') message with severity, code and message fields."""
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


async def read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The client's startup packet, after answering any SSL/GSS encryption request 'N'."""
    for _ in range(3):  # SSLRequest, GSSENCRequest, then the startup message
        length = struct.unpack("!I", await reader.readexactly(4))[0]
        if not 8 <= length <= 10_000:
            raise ConnectionError(f"not a PostgreSQL startup packet (length {length})")
        rest = await reader.readexactly(length - 4)
        code = struct.unpack("!I", rest[:4])[0]
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            writer.write(b"N")
            await writer.drain()
            continue
        return struct.pack("!I", length) + rest
    raise ConnectionError("too many encryption requests")


async def answer_starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Play a server that is starting up: read the startup packet, refuse with 57P03, close."""
    try:
        startup = await read_startup(reader, writer)
        if struct.unpack("!I", startup[4:8])[0] != CANCEL_REQUEST:
            writer.write(error_response(*STARTING_UP))
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class _Session:
    """One forwarded connection; ``lock`` is held while a whole message is written."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.lock = asyncio.Lock()

    async def terminate(self) -> None:
        """End the session as a shutting-down server does: 57P01, then close."""
        async with self.lock:
            with contextlib.suppress(OSError):
                self.client.write(error_response(*ADMIN_SHUTDOWN))
                await self.client.drain()
            self.client.close()
            self.upstream.close()


class PgRestartProxy:
    """Forwards to PostgreSQL; :meth:`shut_down` / :meth:`start_up` play a restart."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.down = False
        self.refused = 0
        """New connections answered 57P03 so far."""
        self.terminated = 0
        """Established sessions ended with 57P01 so far."""
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> PgRestartProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accepted, sock=sock)
        return self

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.down:
                self.refused += 1
                await answer_starting_up(reader, writer)
                return
            await self._forward(reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        session: _Session | None = None
        try:
            startup = await read_startup(reader, writer)
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            upstream_writer.write(startup)
            await upstream_writer.drain()
            session = _Session(writer, upstream_writer)
            self._sessions.add(session)
            await asyncio.gather(
                _raw_pipe(reader, upstream_writer), _message_pipe(upstream_reader, session)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if session is not None:
                self._sessions.discard(session)
            for each in (writer, upstream_writer):
                if each is not None:
                    each.close()

    async def shut_down(self) -> None:
        """Refuse new connections as a starting server; end every session with 57P01."""
        self.down = True
        sessions = list(self._sessions)
        self.terminated += len(sessions)
        await asyncio.gather(*(s.terminate() for s in sessions), return_exceptions=True)

    async def start_up(self) -> None:
        """Forward to the real server again."""
        self.down = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.shut_down()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _raw_pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


async def _message_pipe(source: asyncio.StreamReader, session: _Session) -> None:
    """Server to client, one whole message at a time (so 57P01 lands between two)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while True:
            header = await source.readexactly(5)
            length = struct.unpack("!I", header[1:])[0]
            payload = await source.readexactly(length - 4)
            async with session.lock:
                if session.client.is_closing():
                    return
                session.client.write(header + payload)
                await session.client.drain()
    session.client.close()


class ThreadedPgRestartProxy:
    """The proxy on its own event loop thread, so a test driving real processes can
    call ``shut_down()`` / ``start_up()`` as plain calls (see ``proxy_thread.py``)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.proxy = PgRestartProxy(target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    def start(self) -> ThreadedPgRestartProxy:
        self._thread.start()
        self._run(self.proxy.start())
        return self

    def shut_down(self) -> None:
        self._run(self.proxy.shut_down())

    def start_up(self) -> None:
        self._run(self.proxy.start_up())

    def stop(self) -> None:
        try:
            self._run(self.proxy.close())
            self._run(asyncio.sleep(0.05))  # closed transports release their sockets
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@contextmanager
def pg_restart_proxy(target_host: str, target_port: int) -> Iterator[ThreadedPgRestartProxy]:
    proxy = ThreadedPgRestartProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
