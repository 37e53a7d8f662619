"""The lease heartbeat: a keyed request that is still running keeps its claim.

A claim's lease (``KEEL_IDEMPOTENCY_LEASE_SECONDS``, 3 s by default) is how
long a request may look dead before a retry takes its key over. It is short
so that a client retrying after a crash gets its request run within seconds
(within 5 s by default), not after a minute of ``409``. A request that is
merely slow — a 25 MB evidence upload on a poor connection, a slow database —
must not look dead: while it runs, a background task extends its lease every
third of a lease (one conditional ``UPDATE``, only for requests that outlive
a beat), so one lost beat still leaves it covered. The beat stops when the
request finishes, when the outcome is written, or when the claim turns out to
be lost (another request took it over: this one's completion will fail and
roll back, as before). A process that dies stops beating, and its claim
expires at most one lease later.

Safety never depends on the beat: were a live request's claim taken over (an
event loop stalled for longer than two beats, the database silent for a
lease), the takeover is a compare-and-set and the old owner's completion,
inside its business transaction, finds the claim gone and rolls back — the
work still runs once.

Beats run on the real event loop's time (``asyncio.sleep``); the lease they
set is computed from the injected clock, like every other deadline here.

Most keyed requests end long before their first beat is due, so none is paid
for up front: entering arms one event-loop timer (``call_later``), and only a
request still running when it fires gets a beat task. A task for every request
(created, cancelled, waited for) cost about four times the timer (20 µs against 5 µs
of CPU, entering and leaving, in a loop on the development box).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from keel.errors import KeelError
from keel.guard.idempotency.unit import IdempotencyScope

log = structlog.get_logger(__name__)

BEATS_PER_LEASE = 3

Sleep = Callable[[float], Awaitable[None]]
# Runs a callback after a delay on the event loop, as ``loop.call_later`` does.
Later = Callable[[float, Callable[[], None]], asyncio.Handle]


async def _beat(keyed: IdempotencyScope, interval: float, sleep: Sleep) -> None:
    """Beat now, then every ``interval``: started once the first beat is due."""
    while not keyed.completed:
        try:
            held = await keyed.store.extend(keyed.ref, owner=keyed.owner, now=keyed.clock.now())
        except KeelError:
            # The database is unreachable right now: the next beat tries again, and
            # with three beats a lease one failure does not cost the claim.
            log.warning("idempotency_heartbeat_failed", operation=keyed.ref.operation)
        else:
            if not held:
                if not keyed.completed:
                    log.warning("idempotency_heartbeat_lost_claim", operation=keyed.ref.operation)
                return
        await sleep(interval)


@contextlib.asynccontextmanager
async def heartbeat(
    keyed: IdempotencyScope,
    *,
    lease_seconds: float,
    sleep: Sleep = asyncio.sleep,
    later: Later | None = None,
) -> AsyncIterator[None]:
    """Extend ``keyed``'s claim every ``lease_seconds / 3`` while the block runs;
    ``later`` (the running loop's ``call_later`` by default) starts the first beat."""
    interval = lease_seconds / BEATS_PER_LEASE
    beating: list[asyncio.Task[None]] = []

    def start() -> None:
        beating.append(asyncio.create_task(_beat(keyed, interval, sleep)))

    timer = (later or asyncio.get_running_loop().call_later)(interval, start)
    try:
        yield
    finally:
        timer.cancel()
        for task in beating:  # none unless the request outlived its first beat
            task.cancel()
            # wait() rather than await: a cancellation of *this* request still propagates.
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "idempotency_heartbeat_crashed",
                    operation=keyed.ref.operation,
                    exc_info=task.exception(),
                )
