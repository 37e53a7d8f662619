"""Log output that never blocks the event loop: finished lines handed to a writer thread.

Writing a line to stderr is a blocking system call, and a slow reader (a
terminal, a pipe into a log shipper, a full disk) made every unhandled
exception hold the event loop — and ``/live`` — for over a second. So lines
are rendered on the calling thread (bounded work, see
:mod:`keel.observe.log_lines`) and handed to :class:`LineWriter`, whose one
daemon thread writes them in batches. Handing over takes a lock that the
writer holds only to swap its buffer, never while writing.

The buffer is bounded in characters (:data:`MAX_PENDING_CHARS`). When the
sink cannot keep up and the buffer is full, a new line is **dropped and
counted** rather than making the caller wait: a service that stops answering
because its logs are slow is worse than a gap in the logs. The writer says so
in the stream (``log_lines_dropped`` with the count) once it catches up, and
the count is exported as ``keel_log_lines_dropped_total``.

A signal handler that logs runs on the main thread between two bytecodes of
whatever it interrupted — possibly :meth:`LineWriter.write` itself, holding the
hand-over lock. So the lock is reentrant, and a line written by such a handler is
set aside (appended, nothing else touched) and written with the next batch: it
never waits for its own thread, and never tears the interrupted hand-over's counts.
Keel's own handlers log nothing in signal context (``keel.observe.shutdown``);
this keeps any other from hanging a process.

Lines are flushed by :meth:`LineWriter.close` at interpreter exit (``atexit``)
and when logging is configured again, so none is lost at a normal exit. After
a ``fork`` the child starts its own writer thread on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter

MAX_PENDING_CHARS = 4 * 1024 * 1024
"""Characters waiting to be written before new lines are dropped (about 4 MB)."""

BATCH_SECONDS = 0.05
"""How long the writer lets lines gather once woken, before writing them at once.

Each batch costs the process a thread wake-up and a hand-over of the GIL from the
event loop's thread and back; at a few hundred requests a second a 5 ms window held
about one access line, so nearly every line paid for its own. A flush or a close
ends the window at once, so only a process killed outright loses more (at most
this long of lines)."""


def dropped_lines_counter(registry: CollectorRegistry | None = None) -> Counter:
    """``keel_log_lines_dropped_total`` on ``registry`` (``None``: registered nowhere)."""
    return Counter(
        "keel_log_lines_dropped",
        "Log lines dropped because the log sink was slower than the service writing them.",
        registry=registry,
    )


_open_writers: weakref.WeakSet[LineWriter] = weakref.WeakSet()


class LineWriter:
    """Writes the lines it is handed to ``stream`` from its own thread, in order."""

    def __init__(
        self,
        stream: TextIO,
        *,
        max_pending_chars: int = MAX_PENDING_CHARS,
        dropped_notice: Callable[[int], str] | None = None,
        dropped_counter: Counter | None = None,
    ) -> None:
        """``dropped_counter``: where dropped lines are exported (the app's registry)."""
        self.stream = stream
        self.dropped_counter = dropped_counter
        self.max_pending_chars = max_pending_chars
        self.dropped_notice = dropped_notice
        self.dropped = 0
        self._start()
        _open_writers.add(self)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._condition = threading.Condition(threading.RLock())
        self._pending: list[str] = []
        self._handing_over: int | None = None  # the thread inside write()'s hand-over
        self._interrupted: list[str] = []  # lines a signal handler wrote during one
        self._pending_chars = 0
        self._unreported = 0
        self._queued = 0  # lines handed over so far
        self._written = 0  # of those, lines written (or given up on)
        self._stopping = False
        self._hurry = False  # a flush is waiting: end the batch window now
        self._idle = False
        self._thread: threading.Thread | None = None

    def write(self, line: str) -> None:
        """Hand over one line (without its newline); never waits for the stream."""
        if self._pid != os.getpid():
            self._start()  # forked: the parent's thread and lock are not ours
        with self._condition:
            me = threading.get_ident()
            if self._handing_over == me:  # a signal handler, inside this thread's write()
                if not self._stopping:
                    self._interrupted.append(line + "\n")
                    return
            else:
                self._handing_over = me
                try:
                    if self._hand_over(line):
                        return
                finally:
                    self._handing_over = None
        self._write_now(line + "\n")  # closed (at exit, after the flush): write it in place

    def _hand_over(self, line: str) -> bool:
        """Queue ``line`` (or drop it when the buffer is full); False once closed."""
        if self._stopping:
            return False
        size = len(line) + 1
        if self._pending and self._pending_chars + size > self.max_pending_chars:
            self.dropped += 1
            self._unreported += 1
            if self.dropped_counter is not None:
                self.dropped_counter.inc()
            return True
        self._pending.append(line + "\n")
        self._pending_chars += size
        self._queued += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-log-writer", daemon=True)
            self._thread.start()
        elif self._idle:
            self._condition.notify()
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line handed over so far is written; False on timeout."""
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        with self._condition:
            target = self._queued
            if self._written < target:
                self._hurry = True
                self._condition.notify()
            while self._written < target:
                thread = self._thread
                left = deadline - time.monotonic()
                if thread is None or not thread.is_alive() or left <= 0:
                    return False
                self._condition.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush, stop the thread; later lines are written in place (idempotent)."""
        if self._stopping:
            return
        self.flush(timeout)
        with self._condition:
            self._stopping = True
            self._condition.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _open_writers.discard(self)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._interrupted and not self._stopping:
                    self._idle = True
                    self._condition.wait()
                self._idle = False
                if not self._pending and not self._interrupted:
                    return  # stopping, and everything is written
                if not self._stopping and not self._hurry:
                    # Let a burst gather: one write per batch, and the loop's thread is
                    # not made to hand the GIL to this one for every line. Lines handed
                    # over meanwhile do not notify (not idle); a flush or close does.
                    self._condition.wait(BATCH_SECONDS)
                self._hurry = False
                batch, self._pending = self._pending, []
                batch += self._interrupted
                self._interrupted = []
                self._pending_chars = 0
                upto = self._queued
                dropped, self._unreported = self._unreported, 0
            if dropped and self.dropped_notice is not None:
                batch.append(self.dropped_notice(dropped) + "\n")
            self._write_now("".join(batch))
            with self._condition:
                self._written = upto
                self._condition.notify_all()

    def _write_now(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:  # a stream that cannot take all of Unicode
            with contextlib.suppress(Exception):
                self.stream.write(text.encode("ascii", "backslashreplace").decode("ascii"))
        except Exception:  # a closed or broken stream: nothing left to tell it, and the
            return  # writer thread must outlive it (the next line may find it working)
        with contextlib.suppress(Exception):
            self.stream.flush()


class QueuedLogger:
    """structlog's logger for Keel's own lines: the rendered line goes to a writer."""

    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer

    def msg(self, message: str) -> None:
        self.writer.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class QueuedLoggerFactory:
    """``structlog.configure(logger_factory=…)``: one :class:`QueuedLogger` for all names."""

    def __init__(self, writer: LineWriter) -> None:
        self._logger = QueuedLogger(writer)

    def __call__(self, *args: Any) -> QueuedLogger:
        return self._logger


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_open_writers):
        writer.close(timeout=5.0)
