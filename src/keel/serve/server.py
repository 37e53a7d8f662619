"""uvicorn's server, with a listener that is quiesced before it is closed.

uvicorn's own shutdown closes the listening socket at once, resetting any
connection the kernel had completed but the loop had not yet accepted
(``keel.serve.listener`` says why). ``KeelServer`` first stops new handshakes
and lets the loop accept — and serve — whatever is queued, then hands over to
uvicorn's shutdown: close the listener, let in-flight requests finish within
``timeout_graceful_shutdown``, run the lifespan's shutdown.

The same class runs the single process of ``keel serve`` and each worker of
``keel serve --workers N``.
"""

from __future__ import annotations

import socket

import uvicorn

from keel.serve.listener import quiesce

# Beyond the settle, how long a queue that keeps refilling may delay the close.
QUIESCE_EXTRA_SECONDS = 2.0


class KeelServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, settle_seconds: float) -> None:
        super().__init__(config)
        self.settle_seconds = settle_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:  # a second Ctrl-C means now
            listeners = [listener for server in self.servers for listener in (server.sockets or ())]
            await quiesce(
                listeners,
                settle_seconds=self.settle_seconds,
                bound_seconds=self.settle_seconds + QUIESCE_EXTRA_SECONDS,
            )
        await super().shutdown(sockets)
