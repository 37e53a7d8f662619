"""An open-loop load driver: requests at fixed times, whatever the answers do.

wrk is closed-loop: each connection waits for its answer before sending the
next request, so a server that stalls also slows the load down and the stall
hides in fewer samples (coordinated omission). Here request ``i`` is due at
``start + i / rate`` and is sent then, on its own task, however many are
still outstanding; its latency runs from that scheduled time, so time the
driver itself spent behind schedule counts against the server, never for it.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float
    sent: int
    failures: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float]:
        return {
            "rate": self.rate,
            "sent": self.sent,
            "failures": self.failures,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


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
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout) as client:
        loop = asyncio.get_running_loop()

        async def one(index: int, due: float) -> None:
            nonlocal failures
            try:
                response = await client.post(
                    url, content=body, headers={**headers, "Idempotency-Key": f"{nonce}-{index}"}
                )
                failed = response.status_code >= 300
            except httpx.HTTPError:
                failed = True
            latencies.append((loop.time() - due) * 1000)
            failures += failed

        start = loop.time() + 0.05
        tasks = []
        for index in range(count):
            due = start + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    return OpenLoopResult(
        rate=rate,
        sent=count,
        failures=failures,
        p50_ms=percentile(ordered, 0.50),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1],
    )
