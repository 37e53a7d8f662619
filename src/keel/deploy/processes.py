"""``keel serve`` processes a deployment starts, and stops again only by their pid.

A version runs from one of three places (:class:`Source`): the current
checkout (this interpreter, the checkout's ``src`` first on the path), a
virtualenv that has Keel installed, or a release directory (an unpacked build
holding its own virtualenv in ``venv/`` or ``.venv/``). Each process gets its
own port and its own session, so a signal to it reaches no one else.

Pids are written into the deployment's record, so ``keel deploy rollback`` in
another shell can stop a version the orchestrator started. A pid can be
reused by an unrelated process once ours has exited: before signalling, the
process' command line must still be ``keel … serve … --port PORT`` and its
start mark the one recorded when it was started (the boot's id and the clock
tick the kernel started it at, from ``/proc``: exact, and blind to the wall
clock being stepped) — a pid that no longer looks like ours is treated as
already gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from keel.deploy.release import UNKNOWN_SHA, checkout_sha
from keel.errors import KeelError


class ProcessError(KeelError):
    title = "Version process error"


class SourceKind(StrEnum):
    CHECKOUT = "checkout"
    VIRTUALENV = "virtualenv"
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a version's code is, and so how to start ``keel serve`` from it."""

    kind: SourceKind
    path: Path

    @classmethod
    def current_checkout(cls) -> Source:
        return cls(SourceKind.CHECKOUT, Path(__file__).resolve().parents[3])

    def python(self) -> Path:
        if self.kind is SourceKind.CHECKOUT:
            return Path(sys.executable)
        if self.kind is SourceKind.VIRTUALENV:
            return self.path / "bin" / "python"
        for venv in ("venv", ".venv"):
            candidate = self.path / venv / "bin" / "python"
            if candidate.exists():
                return candidate
        raise ProcessError(f"release directory {self.path} holds no venv/ or .venv/")

    def environment(self) -> dict[str, str]:
        """What the process' environment gains: the code on the path, the sha it runs."""
        extra: dict[str, str] = {}
        src = self.path / "src"
        if self.kind is not SourceKind.VIRTUALENV and (src / "keel").is_dir():
            extra["PYTHONPATH"] = str(src)
        sha = checkout_sha(self.path) if self.kind is not SourceKind.VIRTUALENV else UNKNOWN_SHA
        if sha != UNKNOWN_SHA:
            extra["KEEL_GIT_SHA"] = sha
        return extra

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Source:
        return cls(SourceKind(data["kind"]), Path(data["path"]))


@dataclass(frozen=True, slots=True)
class ServeProcess:
    """One ``keel serve`` of a version group: what is needed to find and stop it later."""

    pid: int
    port: int
    host: str = "127.0.0.1"
    start_mark: str | None = None
    """When the kernel started it (:func:`start_mark`); None in records written before start
    marks were kept, which are then checked by their command line alone."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "port": self.port,
            "host": self.host,
            "start_mark": self.start_mark,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ServeProcess:
        mark = data.get("start_mark")
        return cls(
            pid=int(str(data["pid"])),
            port=int(str(data["port"])),
            host=str(data["host"]),
            start_mark=str(mark) if mark is not None else None,
        )


# Started by a short-lived launcher so the server is nobody's child: it keeps serving
# after the ``keel deploy`` that started it has exited, and init reaps it.
_LAUNCHER = (
    "import subprocess, sys\n"
    "with open(sys.argv[1], 'ab') as log:\n"
    "    server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log,\n"
    "                              stderr=subprocess.STDOUT, start_new_session=True)\n"
    "print(server.pid)\n"
)


def start_serve(
    source: Source,
    port: int,
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path,
    workers: int = 1,
    host: str = "127.0.0.1",
) -> ServeProcess:
    """Start ``keel serve`` from ``source`` in a session of its own; does not wait for it."""
    extra = source.environment()
    environment = {**env, **extra}
    if "PYTHONPATH" in extra and env.get("PYTHONPATH"):
        environment["PYTHONPATH"] = f"{extra['PYTHONPATH']}:{env['PYTHONPATH']}"
    command = [str(source.python()), "-m", "keel.cli", "serve"]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    pid = launch(command, env=environment, cwd=cwd, log_path=log_path)
    return ServeProcess(pid=pid, port=port, host=host, start_mark=start_mark(pid))


def launch(command: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> int:
    """Start ``command`` detached (its own session, nobody's child), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launched = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", _LAUNCHER, str(log_path), *command],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pid = launched.stdout.strip()
    if launched.returncode != 0 or not pid.isdigit():
        raise ProcessError(f"{command[0]} did not start: {launched.stderr.strip()[-500:]}")
    return int(pid)


_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True, slots=True)
class RunningProcess:
    """A live process as ``/proc`` shows it: its arguments and its start mark."""

    arguments: tuple[str, ...]
    start_mark: str


def running_process(pid: int) -> RunningProcess | None:
    """The process ``pid`` if it runs (an exited one not yet reaped does not), else None."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        state, ticks = fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
        boot = _BOOT_ID.read_text().strip()
    except (OSError, IndexError, ValueError):
        return None
    if state in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    text = tuple(argument.decode(errors="replace") for argument in arguments if argument)
    return RunningProcess(text, f"{boot}/{ticks}")


def start_mark(pid: int) -> str | None:
    """What tells this run of ``pid`` from any later process given the same pid: the boot's id
    and the clock tick since boot the kernel started it at. None if it does not run.

    Not a wall-clock time: the boot time the kernel adds to turn ticks into one is
    recomputed from the wall clock, and moves when that clock is stepped.
    """
    found = running_process(pid)
    return found.start_mark if found is not None else None


def same_start(recorded: str | None, found: RunningProcess) -> bool:
    """Whether ``found`` is the run recorded (always, for a record without a start mark)."""
    return recorded is None or recorded == found.start_mark


def is_ours(process: ServeProcess) -> bool:
    """Whether ``process.pid`` is still the ``keel serve`` on ``process.port`` we started."""
    found = running_process(process.pid)
    if found is None or not same_start(process.start_mark, found):
        return False
    text = found.arguments
    return "serve" in text and "--port" in text and str(process.port) in text


def stop_process(
    process: ServeProcess, *, wait_seconds: float = 30.0, poll_seconds: float = 0.05
) -> bool:
    """SIGTERM (``keel serve`` drains, then exits), SIGKILL after ``wait_seconds``.

    Returns whether it had to be killed. A pid that is not ours is left alone.
    """
    return stop_pid(
        process.pid, lambda: is_ours(process), wait_seconds=wait_seconds, poll_seconds=poll_seconds
    )


def stop_pid(
    pid: int,
    still_ours: Callable[[], bool],
    *,
    wait_seconds: float = 30.0,
    poll_seconds: float = 0.05,
) -> bool:
    """SIGTERM ``pid``, SIGKILL after ``wait_seconds``, each signal sent only while
    ``still_ours()`` holds; returns whether it had to be killed."""
    if not still_ours():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if not still_ours():
            return False
        time.sleep(poll_seconds)
    if not still_ours():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not still_ours():
            break
        time.sleep(poll_seconds)
    return True
