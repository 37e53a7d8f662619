"""A webhook receiver on 127.0.0.1 that answers, fails, hangs, slows down or goes away.

For the degradation tests: Keel's notification jobs POST to it over real TCP, through
the real httpx client, so timeouts, refused connections and half-answered requests are
the genuine article. It speaks just enough HTTP/1.1 for one request per connection
(``Connection: close``), and records every request it read.

Modes (``server.mode = ...``, effective for the next request):

* ``ok`` — 204;
* ``fail`` — 503, with ``Retry-After`` when ``retry_after`` is set;
* ``hang`` — read the request, never answer (until the mode changes or the server stops);
* ``slow`` — answer 204 after ``delay`` seconds;
* ``down`` — :meth:`go_down` closes the listener: connections are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["ok", "fail", "hang", "slow"]

_REASONS = {204: "No Content", 503: "Service Unavailable"}


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int | None = None
    """The status sent back; None when the request hung or the client gave up."""


@dataclass
class WebhookServer:
    mode: Mode = "ok"
    delay: float = 0.5
    retry_after: int | None = None
    port: int = 0
    received: list[Received] = field(default_factory=list)
    hanging: int = 0
    """Requests read and not answered yet (``hang`` or ``slow``)."""
    _server: asyncio.Server | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> WebhookServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self._released.set()  # hung requests give up their connection
        self._released = asyncio.Event()

    async def go_down(self) -> None:
        """Refuse connections (the port stays ours to listen on again)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def come_back(self, mode: Mode = "ok") -> None:
        self.set_mode(mode)
        await self.start()

    async def stop(self) -> None:
        await self.go_down()
        self._released.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def delivered(self) -> list[Received]:
        return [r for r in self.received if r.answered is not None and r.answered < 300]

    def delivered_keys(self) -> set[str]:
        return {r.headers["idempotency-key"] for r in self.delivered()}

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):  # bounded whatever the client does
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(headers, json.loads(body) if body else {})
                self.received.append(received)
                await self._answer(received, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, received: Received, writer: asyncio.StreamWriter) -> None:
        mode, released = self.mode, self._released
        if mode in ("hang", "slow"):
            self.hanging += 1
            try:
                if mode == "hang":
                    await released.wait()
                    return  # the connection is dropped unanswered
                await asyncio.sleep(self.delay)
            finally:
                self.hanging -= 1
        status = 503 if mode == "fail" else 204
        extra = f"Retry-After: {self.retry_after}\r\n" if status == 503 and self.retry_after else ""
        writer.write(
            (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Length: 0\r\nConnection: close\r\n{extra}\r\n"
            ).encode()
        )
        await writer.drain()
        received.answered = status
