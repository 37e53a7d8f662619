"""The parent of ``keel serve --workers N``: uvicorn's supervisor, made safe to stop.

uvicorn's ``Multiprocess`` binds the listening socket in the parent and hands it
to each worker; the workers ``listen()`` and ``accept()`` on that one socket.
The parent kept its own descriptor until it exited, after every worker had
closed theirs — so in that window the kernel still completed handshakes on a
socket nobody would ever accept from, and reset them all when the parent
exited: requests the clients believed were being served, lost.

``KeelSupervisor`` closes the parent's descriptor the moment it is told to stop,
before it forwards SIGTERM to the workers: from then on only the workers hold
the socket, each drains, quiesces and closes it (``keel.serve.server``), and the
last close really closes the listener. It also

- runs ``KeelServer`` in every worker it starts (at start, restart, SIGHUP and SIGTTIN),
- retires a worker whose siblings go on serving (SIGHUP's replacements, SIGTTOU)
  with its listener left open: the quiesce filter lives on the shared socket, and
  one worker's quiesce would drop every new connection of the workers that stay
  (``KeelWorker.retire``),
- health-pings without blocking: uvicorn's ping waited up to its timeout for each
  worker in turn, so one slow worker delayed every other check and the handling
  of SIGTERM itself; Keel keeps one ping outstanding per worker and reads the
  answer on a later tick. A worker is unresponsive when a ping goes unanswered
  for ``KEEL_SERVE_WORKER_HEALTHCHECK_SECONDS`` (uvicorn's fixed 5 s killed
  workers that were merely slow on a busy machine) — or, while starting, when
  its first answer has not come within ``KEEL_SERVE_WORKER_START_SECONDS``
  (uvicorn pinged a worker still importing the app, and killed it: a loaded
  machine restarted workers in a loop). Each worker replaced is logged and
  counted in ``keel_serve_worker_restarts_total``,
- SIGKILLs a worker still running ``KEEL_SERVE_WORKER_KILL_GRACE_SECONDS`` after
  its drain and grace have passed, so a stuck worker cannot hold a stop forever.
"""

from __future__ import annotations

import contextlib
import enum
import multiprocessing
import os
import pickle
import socket
import time
from dataclasses import dataclass

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from keel.observe.worker_restarts import Reason, RestartCount
from keel.serve.server import KeelServer

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SupervisorPolicy:
    """The supervisor's timeouts beyond uvicorn's ``timeout_worker_healthcheck``."""

    settle_seconds: float  # listener quiesce (KEEL_SERVE_LISTENER_SETTLE_SECONDS)
    start_seconds: float  # a new worker's first health answer (KEEL_SERVE_WORKER_START_SECONDS)
    stop_seconds: float  # drain + settle + grace + kill grace: then SIGKILL


class Health(enum.Enum):
    STARTING = "starting"  # alive, has not answered a ping yet
    SERVING = "serving"  # answered; its current ping is within the timeout
    UNRESPONSIVE = "unresponsive"  # a ping unanswered past its timeout
    EXITED = "exited"


class KeelWorker(Process):
    """A uvicorn worker process whose server is ``KeelServer``, health-checked without blocking."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], settle: float) -> None:
        # Both set before start(): the child gets a pickled copy of this object. The
        # event is shared with the child (uvicorn spawns its workers).
        self.settle_seconds = settle
        self.retiring = multiprocessing.get_context("spawn").Event()
        # The supervisor's view of the health ping (parent side only).
        self.started_at = 0.0
        self.answered = False
        self.ping_sent_at: float | None = None
        super().__init__(config, sockets)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = KeelServer(
                self.config, settle_seconds=self.settle_seconds, retiring=self.retiring
            )
        return self._server

    def retire(self) -> None:
        """Stop this worker while its siblings keep the shared listener: it drains and
        stops like on SIGTERM, but leaves the listener unfiltered for them."""
        self.retiring.set()
        self.terminate()

    def start(self) -> None:
        super().start()
        self.started_at = time.monotonic()

    def check(self, now: float, *, healthcheck_seconds: float, start_seconds: float) -> Health:
        """One step of the health ping, never waiting: read answers, send the next ping."""
        if not self.process.is_alive():
            return Health.EXITED
        try:
            while self.parent_conn.poll(0):
                self.parent_conn.recv()
                self.answered = True
                self.ping_sent_at = None
            if self.ping_sent_at is None:
                self.parent_conn.send(b"ping")
                self.ping_sent_at = now
        except (OSError, EOFError, pickle.UnpicklingError):
            return Health.UNRESPONSIVE
        if self.answered:
            late = now - self.ping_sent_at > healthcheck_seconds
        else:
            late = now - self.started_at > start_seconds
        if late:
            return Health.UNRESPONSIVE
        return Health.SERVING if self.answered else Health.STARTING


class KeelSupervisor(Multiprocess):
    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], policy: SupervisorPolicy
    ) -> None:
        super().__init__(config, sockets)
        self.policy = policy
        self.restarts = RestartCount()
        self.startup_failed = False

    def new_worker(self) -> KeelWorker:
        worker = KeelWorker(self.config, self.sockets, self.policy.settle_seconds)
        worker.start()
        return worker

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self.new_worker())

    def run(self) -> None:
        log.info("serve_supervisor_started", pid=os.getpid(), workers=self.processes_num)
        self.init_processes()
        while not self.should_exit.wait(0.5):
            self.handle_signals()
            self.keep_subprocess_alive()
        self.close_listeners()
        self.terminate_all()
        self.join_all()
        log.info("serve_supervisor_stopped", pid=os.getpid())

    def close_listeners(self) -> None:
        """Drop the parent's descriptors: the workers' are now the only ones."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def join_all(self) -> None:
        deadline = time.monotonic() + self.policy.stop_seconds
        for process in self.processes:
            process.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.process.is_alive():
                log.error(
                    "serve_worker_killed", pid=process.pid, after_seconds=self.policy.stop_seconds
                )
                process.kill()
                process.process.join(timeout=10.0)

    def keep_subprocess_alive(self) -> None:
        for index, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if not isinstance(process, KeelWorker):  # every worker is one; for mypy
                continue
            health = process.check(
                time.monotonic(),
                healthcheck_seconds=self.config.timeout_worker_healthcheck,
                start_seconds=self.policy.start_seconds,
            )
            if health in (Health.SERVING, Health.STARTING):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before it served: the app, or the socket, is broken and
                # would fail the same way on every restart.
                log.error("serve_worker_startup_failed", pid=process.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            reason: Reason = "unresponsive" if health is Health.UNRESPONSIVE else "exited"
            replacement = self.new_worker()
            self.processes[index] = replacement
            self.restarts.add(reason)
            log.warning(
                "serve_worker_restarted",
                pid=process.pid,
                exit_code=process.exitcode,
                reason=reason,
                answered_before=process.answered,
                replacement_pid=replacement.pid,
                healthcheck_seconds=self.config.timeout_worker_healthcheck,
                start_seconds=self.policy.start_seconds,
                restarts=self.restarts.counts[reason],
            )

    def restart_all(self) -> None:
        """SIGHUP: replace each worker, its replacement serving before it is retired."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self.new_worker()
            if not new.wait_until_ready(self.policy.start_seconds, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("serve_worker_not_ready", pid=new.pid, keeping=old.pid)
                return
            self._retire(old)
            self.processes[index] = new

    def handle_ttou(self) -> None:
        """SIGTTOU: one worker fewer, retired with the listener left to the rest."""
        if self.processes_num <= 1:
            log.info("serve_workers_at_minimum", workers=self.processes_num)
            return
        self.processes_num -= 1
        log.info("serve_workers_decreased", workers=self.processes_num)
        self._retire(self.processes.pop())

    @staticmethod
    def _retire(process: Process) -> None:
        if isinstance(process, KeelWorker):  # every worker is one; for mypy
            process.retire()
        else:
            process.terminate()
        process.join()

    def handle_ttin(self) -> None:
        self.processes_num += 1
        log.info("serve_workers_increased", workers=self.processes_num)
        self.processes.append(self.new_worker())
