"""Many requests at once across several servers: the load of the multi-process tests.

The requests go round-robin over the servers' base URLs, all in flight together,
so every server sees its share at the same moment: what a shared limit, quota or
idempotency key must hold against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx


async def all_at_once(
    client: httpx.AsyncClient,
    bases: Sequence[str],
    count: int,
    method: str,
    path: str,
    **request: Any,
) -> list[httpx.Response]:
    """``count`` identical requests, the ``i``-th to ``bases[i % len(bases)]``, sent
    together; the responses in the order sent."""
    return await asyncio.gather(
        *(
            client.request(method, f"{bases[index % len(bases)]}{path}", **request)
            for index in range(count)
        )
    )
