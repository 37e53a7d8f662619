"""An environment's front: the HAProxy process, on one machine, in front of its version groups.

``keel deploy front`` starts it and registers it, one per environment, so that
``keel deploy run``, ``rollback`` and ``status`` find it from any shell by the
environment alone. What is registered is enough to reach it (admin socket,
listen address, configuration) and to know it is still the process we started:
a pid is only trusted while ``/proc`` shows the same start mark and an
``haproxy … -f CONFIG`` command line, because the kernel reuses pids.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from keel.deploy.processes import running_process, same_start, stop_pid


class FrontState(StrEnum):
    SERVING = "serving"
    GONE = "haproxy gone"
    ELSEWHERE = "on another host"


@dataclass(frozen=True, slots=True)
class Front:
    """One environment's HAProxy as registered: where it runs, listens and is commanded."""

    environment: str
    host_name: str
    workdir: Path
    admin_socket: Path
    config_path: Path
    bind_host: str
    bind_port: int
    pid: int
    start_mark: str
    """Which run of ``pid`` is ours (:func:`keel.deploy.processes.start_mark`)."""
    started_at: datetime

    def state(self, *, host_name: str | None = None) -> FrontState:
        """Whether this front's HAProxy still runs, seen from ``host_name`` (this machine)."""
        if self.host_name != (host_name or this_host()):
            return FrontState.ELSEWHERE
        found = running_process(self.pid)
        if found is None or not same_start(self.start_mark, found):
            return FrontState.GONE
        arguments = found.arguments
        ours = (
            bool(arguments)
            and Path(arguments[0]).name.startswith("haproxy")
            and str(self.config_path) in arguments
        )
        return FrontState.SERVING if ours else FrontState.GONE

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "host_name": self.host_name,
            "workdir": str(self.workdir),
            "admin_socket": str(self.admin_socket),
            "config_path": str(self.config_path),
            "bind_host": self.bind_host,
            "bind_port": self.bind_port,
            "pid": self.pid,
            "start_mark": self.start_mark,
            "started_at": self.started_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Front:
        return cls(
            environment=str(data["environment"]),
            host_name=str(data["host_name"]),
            workdir=Path(data["workdir"]),
            admin_socket=Path(data["admin_socket"]),
            config_path=Path(data["config_path"]),
            bind_host=str(data["bind_host"]),
            bind_port=int(data["bind_port"]),
            pid=int(data["pid"]),
            start_mark=str(data["start_mark"]),
            started_at=datetime.fromisoformat(str(data["started_at"])),
        )


def this_host() -> str:
    """The name fronts are registered under: pids and sockets mean something only there."""
    return socket.gethostname()


def stop_front(front: Front, *, wait_seconds: float = 10.0) -> bool:
    """Stop the front's HAProxy, signalling only while its pid is still that HAProxy."""
    return stop_pid(
        front.pid, lambda: front.state() is FrontState.SERVING, wait_seconds=wait_seconds
    )
