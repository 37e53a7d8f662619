"""An open-loop load driver: requests at fixed times, whatever the answers do.

wrk is closed-loop: each connection waits for its answer before sending the
next request, so a server that stalls also slows the load down and the stall
hides in fewer samples (coordinated omission). Here request ``i`` is due at
``start + i / rate`` and is sent then, on its own task, however many are
still outstanding; its latency runs from that scheduled time, so time the
driver itself spent behind schedule counts against the server, never for it.
So the driver must stay far from its own limits: it reports how late it sent
(``late_p99_ms``) and its share of a core (``driver_cpu_share``), and speaks
HTTP/1.1 itself over keep-alive connections (see ``_Connections``).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float
    sent: int
    failures: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    late_p99_ms: float
    """How late the driver itself sent (p99): large, and the figures are the driver's."""
    driver_cpu_share: float
    """The driver's CPU time over the run's length (1.0: one core, saturated)."""

    def as_dict(self) -> dict[str, float]:
        return {
            "rate": self.rate,
            "sent": self.sent,
            "failures": self.failures,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "late_p99_ms": self.late_p99_ms,
            "driver_cpu_share": self.driver_cpu_share,
        }


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Connections:
    """Keep-alive HTTP/1.1 connections to one server: an idle one is reused, else a new
    one is opened, so any number of requests can be outstanding at once.

    Why not httpx: it costs its caller a few milliseconds of CPU per request, and on this
    2-core machine a driver at 200 requests a second saturated its own core — its queue,
    not the server's, was what the percentiles measured (the server sat at 20 % CPU). A
    request here is one write of preformatted bytes and one read of the answer's head
    and body: the driver stays a small share of a core at the rates measured.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[Stream] = []

    async def take(self) -> tuple[Stream, bool]:
        """A connection, and whether it was reused (the server may have closed it while it
        was idle: uvicorn closes keep-alive connections idle for 5 s)."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof():
                return (reader, writer), True
            writer.close()
        return await asyncio.open_connection(self.host, self.port), False

    def give(self, stream: Stream) -> None:
        self.idle.append(stream)

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The answer's status, and whether the connection may be used again."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep = 0, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = b"close" not in value.lower()
    if not chunked:
        await reader.readexactly(length)
        return status, keep
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return status, keep


async def open_loop(
    url: str,
    rate: float,
    seconds: float,
    body: str,
    headers: dict[str, str],
    *,
    request_timeout: float = 10.0,
) -> OpenLoopResult:
    """POST ``body`` to ``url`` at ``rate`` per second for ``seconds``, each with its own
    Idempotency-Key; latency from each request's scheduled time."""
    count = max(1, int(rate * seconds))
    nonce = uuid.uuid4().hex
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = body.encode()
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + f"Content-Length: {len(payload)}\r\n"
    ).encode("latin-1")
    latencies: list[float] = []
    lateness: list[float] = []
    failures = 0
    connections = _Connections(host, port)
    loop = asyncio.get_running_loop()

    async def exchange(request: bytes) -> int:
        """Send ``request`` and read its answer's status. A reused connection the server
        closed before answering anything is retried once on a new one, as HTTP clients do
        (RFC 9112, 9.3.1): the request never reached the server."""
        for attempt in range(2):
            stream, reused = await connections.take()
            try:
                stream[1].write(request)
                status, keep = await _read_answer(stream[0])
            except asyncio.IncompleteReadError as error:
                stream[1].close()
                if reused and not error.partial and attempt == 0:
                    continue
                raise
            except BaseException:
                stream[1].close()
                raise
            if keep:
                connections.give(stream)
            else:
                stream[1].close()
            return status
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def one(index: int, due: float) -> None:
        nonlocal failures
        lateness.append((loop.time() - due) * 1000)
        request = head + f"Idempotency-Key: {nonce}-{index}\r\n\r\n".encode() + payload
        try:
            async with asyncio.timeout(request_timeout):
                failed = await exchange(request) >= 300
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            failed = True
        latencies.append((loop.time() - due) * 1000)
        failures += failed

    cpu_before, wall_before = time.process_time(), time.monotonic()
    start = loop.time() + 0.05
    tasks = []
    try:
        for index in range(count):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
    finally:
        connections.close()
    cpu_share = (time.process_time() - cpu_before) / max(1e-9, time.monotonic() - wall_before)
    ordered = sorted(latencies)
    return OpenLoopResult(
        rate=rate,
        sent=count,
        failures=failures,
        p50_ms=percentile(ordered, 0.50),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1],
        late_p99_ms=percentile(sorted(lateness), 0.99),
        driver_cpu_share=cpu_share,
    )
