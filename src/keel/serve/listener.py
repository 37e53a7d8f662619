"""Closing a listening socket without resetting a connection the kernel already accepted.

The kernel completes TCP handshakes on its own and queues them until the
process calls ``accept()``. Closing a listening socket resets every connection
still in that queue — to the client, a connection that was accepted and then
dropped with no answer. Closing while clients keep connecting therefore always
loses the few that arrived between the last ``accept()`` and the ``close()``.

So Keel quiesces a listener before closing it: a socket filter (classic BPF,
``SO_ATTACH_FILTER``, Linux) drops every new SYN, so no new handshake starts,
while the ACKs of handshakes already under way still pass. The event loop goes
on accepting until the queue has stayed empty for a settle period, and only then
is the socket closed. A client whose SYN was dropped retransmits it after a
second and, the listener being gone by then, is refused — at connect time,
where a client knows its request was never sent. Elsewhere than Linux the
filter is not available and the listener is closed after the same settle.

The filter lives on the socket, not on a descriptor: with ``--workers N`` the
first worker to quiesce stops new handshakes for all of them, and the last one
to close its descriptor accepts what remained in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; not exported by the socket module

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}. The filter sees the packet from
# its TCP header on (the socket layer has pulled the IP header), so byte 13 holds the
# flags: a segment whose SYN is set and ACK is not opens a new connection: drop it
# (return 0); keep everything else whole (return 0xFFFFFFFF).
_BPF_LD_B_ABS = 0x30
_BPF_ALU_AND_K = 0x54
_BPF_JMP_JEQ_K = 0x15
_BPF_RET_K = 0x06
_TCP_FLAGS_OFFSET = 13
_SYN, _ACK = 0x02, 0x10
DROP_NEW_CONNECTIONS = (
    (_BPF_LD_B_ABS, 0, 0, _TCP_FLAGS_OFFSET),
    (_BPF_ALU_AND_K, 0, 0, _SYN | _ACK),
    (_BPF_JMP_JEQ_K, 0, 1, _SYN),
    (_BPF_RET_K, 0, 0, 0),
    (_BPF_RET_K, 0, 0, 0xFFFFFFFF),
)


class Listener(Protocol):
    """What a listening socket, or asyncio's and uvloop's wrappers of one, offer."""

    def fileno(self) -> int: ...


def refuse_new_connections(listener: Listener) -> bool:
    """Drop new SYNs on ``listener`` from now on; False where the kernel cannot."""
    if not sys.platform.startswith("linux"):
        return False
    instructions = b"".join(struct.pack("HBBI", *line) for line in DROP_NEW_CONNECTIONS)
    program = ctypes.create_string_buffer(instructions, len(instructions))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, native layout.
    fprog = struct.pack("HP", len(DROP_NEW_CONNECTIONS), ctypes.addressof(program))
    try:
        # A duplicate descriptor reaches the same socket, whatever object wraps ours.
        with socket.socket(fileno=os.dup(listener.fileno())) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return False  # the program reads TCP flags; nothing else is TCP
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as error:
        log.warning("listener_filter_failed", error=str(error))
        return False
    return True


def has_queued_connections(listener: Listener) -> bool:
    """True while the kernel holds handshakes that nobody has accepted yet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no poll(): Windows
        poller = select.poll()  # not select(): a server may hold descriptors past 1024
        poller.register(listener.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    return False


async def quiesce(
    listeners: Sequence[Listener], *, settle_seconds: float, bound_seconds: float
) -> None:
    """Stop new handshakes, then wait until the accept queues stay empty.

    The caller's event loop keeps accepting (and serving) meanwhile; it closes the
    listeners afterwards. Waits at least ``settle_seconds`` — for handshakes already
    under way to complete — and at most ``bound_seconds``.
    """
    filtered = [refuse_new_connections(listener) for listener in listeners]
    started = time.monotonic()
    settled_at = started + settle_seconds
    deadline = started + max(bound_seconds, settle_seconds)
    while True:
        now = time.monotonic()
        queued = any(has_queued_connections(listener) for listener in listeners)
        if now >= deadline or (now >= settled_at and not queued):
            break
        await asyncio.sleep(0.02)
    log.info(
        "listener_quiesced",
        filtered=all(filtered),
        waited_seconds=round(time.monotonic() - started, 3),
        queued=any(has_queued_connections(listener) for listener in listeners),
    )
