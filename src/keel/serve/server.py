"""uvicorn's server, with a listener that is quiesced before it is closed.

uvicorn's own shutdown closes the listening socket at once, resetting any
connection the kernel had completed but the loop had not yet accepted
(``keel.serve.listener`` says why). ``KeelServer`` first stops new handshakes
and lets the loop accept — and serve — whatever is queued, then hands over to
uvicorn's shutdown: close the listener, let in-flight requests finish within
``timeout_graceful_shutdown``, run the lifespan's shutdown.

Two more things a stop needs from the server:

- **A SIGTERM that comes while the app is still starting** reaches uvicorn's
  handler, not the app's drain (the lifespan installs that one, in
  ``keel.observe.shutdown``). uvicorn then stops right after startup — and this
  worker's quiesce puts the listener's filter on the socket it shares with the
  other workers, which are still draining: they stop getting new connections a
  drain early (seen on a loaded machine: a worker slow to start, a group stop).
  So such a stop is handed to the app's drain once it has one, as if it had
  come a moment later.
- **Every line logged is written before the process ends.** uvicorn re-raises
  the signal it caught once it is done; in a ``--workers`` worker that signal's
  handler is the default one, which ends the process at once, before the log
  writer's thread had written the shutdown's last lines.

- **A worker retired while its siblings go on serving** (SIGHUP replaces each
  worker, SIGTTOU retires one) must not quiesce: the filter would stay on the
  socket the siblings keep accepting on, and every new connection to them would
  be dropped. Its descriptor's close resets nothing, the socket staying open in
  the others, so it just stops accepting and finishes what it holds.

The same class runs the single process of ``keel serve`` and each worker of
``keel serve --workers N``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from types import FrameType
from typing import Protocol

import structlog
import uvicorn

from keel.observe.logs import flush_logs
from keel.serve.listener import quiesce

log = structlog.get_logger(__name__)

# Beyond the settle, how long a queue that keeps refilling may delay the close.
QUIESCE_EXTRA_SECONDS = 2.0

# Before the process ends, how long its last log lines may take to be written.
LOG_FLUSH_SECONDS = 2.0


class Flag(Protocol):
    """What the server reads of the supervisor's ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...


class KeelServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, *, settle_seconds: float, retiring: Flag | None = None
    ) -> None:
        super().__init__(config)
        self.settle_seconds = settle_seconds
        self.retiring = retiring
        """Set by the supervisor when this worker stops alone (see the module's docstring)."""
        self.signals_before_drain: list[int] = []
        """Signals that reached this server before the app's drain had taken SIGTERM over."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's signal handler (signal context: records, no log line, no lock)."""
        if signal.getsignal(signal.SIGTERM) == self.handle_exit:  # the app's drain is not in
            self.signals_before_drain.append(sig)
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.should_exit and not self.force_exit:
            self._hand_early_stop_to_drain()

    def _hand_early_stop_to_drain(self) -> None:
        """A SIGTERM that came during startup goes to the app's drain, now installed."""
        drain = signal.getsignal(signal.SIGTERM)
        early = set(self.signals_before_drain)
        if early != {signal.SIGTERM} or drain == self.handle_exit or not callable(drain):
            return  # SIGINT means now; without a drain of the app's, uvicorn's stop is it
        log.info("serve_stop_during_startup_drained", signals=len(self.signals_before_drain))
        self.should_exit = False
        drain(signal.SIGTERM, None)  # it only schedules the drain on this loop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.retiring is not None and self.retiring.is_set():
            log.info("listener_left_to_siblings", pid=os.getpid())
        elif not self.force_exit:  # a second Ctrl-C means now
            listeners = [listener for server in self.servers for listener in (server.sockets or ())]
            await quiesce(
                listeners,
                settle_seconds=self.settle_seconds,
                bound_seconds=self.settle_seconds + QUIESCE_EXTRA_SECONDS,
            )
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:  # before uvicorn re-raises the signal, which may end the process
                flush_logs(LOG_FLUSH_SECONDS)
