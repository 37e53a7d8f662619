"""Graceful shutdown on SIGTERM: drain first, then stop.

uvicorn closes its listening socket as soon as SIGTERM arrives, so it could
never answer ``/ready`` 503 while load balancers notice. Keel therefore puts
its own handler in front of uvicorn's (installed by the app's lifespan, which
starts after uvicorn installed its own): on the first SIGTERM it marks the
process draining at once — ``/ready`` answers 503, ``/live`` stays 200 — keeps
serving for ``shutdown_drain_seconds``, then hands the signal to uvicorn,
which stops accepting connections and lets in-flight requests finish within
``shutdown_grace_seconds``. A second SIGTERM, or SIGINT, skips the wait —
but not one within ``REPEAT_WINDOW_SECONDS`` of the first: that is the same
stop delivered twice, as when SIGTERM goes to the whole process group (systemd's
default) and the ``--workers`` supervisor forwards its own to each worker
half a second later; taken as "now", it would cut the drain short.
This works the same in a single process and in each ``--workers`` worker.
While draining, responses carry ``Connection: close`` (:mod:`keel.http.draining`);
how the listener is then closed without losing a queued connection is
``keel.serve``'s part.

The signal handler itself does nothing but hand the signal to the event loop.
Python runs a handler on the main thread between two bytecodes of whatever that
thread was doing — under load, often writing a log line while holding the log
writer's lock, or counting a metric under prometheus_client's. A handler that
logged there waited for a lock its own thread held: the worker hung, neither
serving nor closing its listener, until the supervisor killed it. So the
decision, the log lines and the hand-over all run as a loop callback, in a
context of their own (not the interrupted request's).
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog

from keel.observe.lifecycle import Lifecycle

log = structlog.get_logger(__name__)

Handler = Callable[[int, FrameType | None], Any]

REPEAT_WINDOW_SECONDS = 2.0


class DrainOnSignal:
    def __init__(self, lifecycle: Lifecycle, drain_seconds: float) -> None:
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._draining_since: float | None = None

    def install(self) -> bool:
        """Chain in front of the current SIGTERM handler; False when signals are not ours."""
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False  # no server handler to hand over to (tests, plain ASGI use)
        self._previous = previous
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def uninstall(self) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous)
        self._previous = None

    def _on_sigterm(self, signum: int, _frame: FrameType | None) -> None:
        """The handler proper, in signal context: no lock, no log line, nothing but a wake-up."""
        now = time.monotonic()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # Only appends to the loop's queue and writes its wake-up byte: safe here. An
            # empty context: the interrupted request's ids are not this stop's.
            loop.call_soon_threadsafe(self._received, signum, now, context=contextvars.Context())
            return
        previous = self._previous  # no loop left to drain on: stop as asked
        if callable(previous):
            previous(signum, None)

    def _received(self, signum: int, now: float) -> None:
        self.receive(signum, None, now=now)

    def receive(self, signum: int, frame: FrameType | None, *, now: float) -> None:
        """One SIGTERM at ``now`` (monotonic): start the drain, ignore a repeat, or stop now.

        Runs on the event loop's thread (never in signal context).
        """
        since = self._draining_since
        if since is not None and now - since < REPEAT_WINDOW_SECONDS:
            log.info("shutdown_sigterm_repeated", seconds_since_first=round(now - since, 3))
            return
        if self.lifecycle.draining or self.drain_seconds <= 0 or self._loop is None:
            self._hand_over(signum, frame)
            return
        self._draining_since = now
        self.lifecycle.begin_draining()
        log.info("shutdown_draining", drain_seconds=self.drain_seconds)
        self._pending = self._loop.call_later(self.drain_seconds, self._hand_over, signum, None)

    def _hand_over(self, signum: int, frame: FrameType | None) -> None:
        self.lifecycle.begin_draining()
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        previous = self._previous
        if callable(previous):
            log.info("shutdown_stopping")
            previous(signum, frame)
