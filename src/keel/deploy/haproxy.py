"""HAProxy in front of the versions of one service: its configuration, its process, its runtime API.

Each version (a group of ``keel serve`` processes) is one ``server`` line of
one backend balanced ``roundrobin`` — a dynamic algorithm, so a server's
weight can change at any moment through the runtime API (``set weight``)
without a reload, which would cost a new process and, with it, connections.
``static-rr`` or hashing would accept only 0 % or 100 %. Draining
(``set server … state drain``) stops new requests to a version while the ones
it is serving finish, before it is stopped.

The runtime API is HAProxy's admin socket (``stats socket … level admin``):
one text command per connection, the answer read to the end. A ``set``
command answers nothing when it worked and a sentence when it did not, which
:class:`RuntimeApi` turns into :class:`HAProxyCommandFailed`.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from keel.errors import KeelError

BACKEND = "versions"
FRONTEND = "keel"
MAX_WEIGHT = 256
MAX_SOCKET_PATH = 100  # sockaddr_un holds 108 bytes, NUL included
SERVER_CHECK = "check inter 1s fall 3 rise 1"
"""A server is down after three failed checks a second apart, up again after one."""
_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class HAProxyError(KeelError):
    title = "HAProxy error"


class HAProxyUnavailable(HAProxyError):
    """No ``haproxy`` binary, or it did not come up."""

    title = "HAProxy unavailable"


class HAProxyCommandFailed(HAProxyError):
    """The runtime API refused a command (an unknown server, a weight out of range, …)."""

    title = "HAProxy command failed"


@dataclass(frozen=True, slots=True)
class Server:
    """One version behind the proxy: a name, where it listens, and its share of new requests."""

    name: str
    host: str
    port: int
    weight: int = 0

    def __post_init__(self) -> None:
        if not _SERVER_NAME.match(self.name):
            raise HAProxyError(f"{self.name!r} is not a server name (letters, digits, _ . -)")
        if not 0 <= self.weight <= MAX_WEIGHT:
            raise HAProxyError(f"weight {self.weight} is outside 0..{MAX_WEIGHT}")


def render_config(
    servers: Sequence[Server],
    *,
    bind_host: str,
    bind_port: int,
    admin_socket: Path,
    health_path: str | None = None,
    served_by_header: str | None = None,
    connect_timeout_ms: int = 2000,
    request_timeout_ms: int = 30000,
) -> str:
    """The whole configuration: one frontend, one ``roundrobin`` backend of ``servers``.

    ``retry-on conn-failure`` with ``option redispatch`` sends a request whose
    connection failed to another server, so a version that stops accepting
    between two health checks costs a retry, not an error. With
    ``health_path`` HAProxy also checks each server (``/ready`` for Keel); with
    ``served_by_header`` every response names the server that answered it.
    """
    if not servers:
        raise HAProxyError("HAProxy needs at least one server")
    if len({server.name for server in servers}) != len(servers):
        raise HAProxyError("server names must be distinct")
    check = f" {SERVER_CHECK}" if health_path else ""
    lines = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        f"    timeout connect {connect_timeout_ms}ms",
        f"    timeout client {request_timeout_ms}ms",
        f"    timeout server {request_timeout_ms}ms",
        "    timeout http-keep-alive 1s",
        # A check waits this long for /ready: a busy server answers late, and marking the
        # only version up down for it would refuse every request.
        "    timeout check 5s",
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "",
        f"frontend {FRONTEND}",
        f"    bind {bind_host}:{bind_port}",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    balance roundrobin",
    ]
    if health_path:
        lines.append(f"    option httpchk GET {health_path}")
    if served_by_header:
        lines.append(f"    http-response set-header {served_by_header} %s")
    lines.extend(
        f"    server {server.name} {server.host}:{server.port} weight {server.weight}{check}"
        for server in servers
    )
    return "\n".join(lines) + "\n"


class RuntimeApi:
    """HAProxy's admin socket: one command per connection."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def command(self, text: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self.timeout)
                connection.connect(str(self.path))
                connection.sendall(text.encode() + b"\n")
                chunks = []
                while chunk := connection.recv(65536):
                    chunks.append(chunk)
        except OSError as error:
            raise HAProxyUnavailable(f"HAProxy's admin socket {self.path}: {error}") from error
        return b"".join(chunks).decode().strip()

    def _set(self, text: str) -> None:
        answer = self.command(text)
        if answer:
            raise HAProxyCommandFailed(f"{text!r}: {answer}")

    def set_weight(self, server: str, weight: int) -> None:
        if not 0 <= weight <= MAX_WEIGHT:
            raise HAProxyError(f"weight {weight} is outside 0..{MAX_WEIGHT}")
        self._set(f"set weight {BACKEND}/{server} {weight}")

    def weight(self, server: str) -> int:
        """The server's current weight (``get weight`` answers ``"50 (initial 100)"``)."""
        answer = self.command(f"get weight {BACKEND}/{server}")
        first = answer.split(" ", 1)[0]
        if not first.isdigit():
            raise HAProxyCommandFailed(f"get weight {server}: {answer}")
        return int(first)

    def drain(self, server: str) -> None:
        """No new requests to ``server``; the ones it is serving finish."""
        self._set(f"set server {BACKEND}/{server} state drain")

    def ready(self, server: str) -> None:
        self._set(f"set server {BACKEND}/{server} state ready")

    def sessions(self) -> dict[str, int]:
        """Each server's current sessions (``show stat``'s ``scur``), to know a drain is done."""
        return {name: int(value or 0) for name, value in self.server_column("scur").items()}

    def statuses(self) -> dict[str, str]:
        """Each server's status by HAProxy's checks (``UP``, ``DOWN``, ``MAINT``, ``NOLB``…)."""
        return self.server_column("status")

    def server_column(self, column: str) -> dict[str, str]:
        """One column of ``show stat`` for each server of the backend."""
        rows = self.command("show stat").splitlines()
        if not rows or not rows[0].startswith("# "):
            raise HAProxyCommandFailed(f"show stat: {rows[:1]}")
        header = rows[0][2:].split(",")
        found: dict[str, str] = {}
        for row in rows[1:]:
            cells = dict(zip(header, row.split(","), strict=False))
            if cells.get("pxname") == BACKEND and cells.get("svname") not in (
                "BACKEND",
                "FRONTEND",
            ):
                found[cells["svname"]] = cells.get(column, "")
        return found


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(path).exists()),
        None,
    )
    if found is None:
        raise HAProxyUnavailable("no haproxy binary: apt-get install haproxy (.ci/run does)")
    return found


class HAProxy:
    """One HAProxy process with its configuration and admin socket in ``workdir``."""

    def __init__(
        self,
        servers: Sequence[Server],
        *,
        workdir: Path,
        bind_port: int,
        bind_host: str = "127.0.0.1",
        health_path: str | None = None,
        served_by_header: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.admin_socket = workdir / "admin.sock"
        if len(str(self.admin_socket)) > MAX_SOCKET_PATH:
            raise HAProxyError(f"socket path {self.admin_socket} is too long for a unix socket")
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.config = render_config(
            servers,
            bind_host=bind_host,
            bind_port=bind_port,
            admin_socket=self.admin_socket,
            health_path=health_path,
            served_by_header=served_by_header,
        )
        self.bind = (bind_host, bind_port)
        self.api = RuntimeApi(self.admin_socket)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, *, wait_seconds: float = 10.0) -> None:
        """Check the configuration, start HAProxy in the foreground, wait for socket and port."""
        binary = haproxy_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config, encoding="utf-8")
        checked = subprocess.run(  # noqa: S603 - our own binary and file
            [binary, "-c", "-q", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise HAProxyError(f"haproxy refused the configuration: {checked.stderr.strip()}")
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and file
            [binary, "-db", "-f", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise HAProxyUnavailable(f"haproxy exited at start: {self._log_tail()}")
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise HAProxyUnavailable(f"haproxy did not come up in {wait_seconds:g} s")

    def answers(self) -> bool:
        """Whether the admin socket and the frontend's port both take connections."""
        try:
            self.api.command("show info")
            with socket.create_connection(self.bind, timeout=1.0):
                return True
        except (OSError, HAProxyUnavailable):
            return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self, *, wait_seconds: float = 10.0) -> None:
        """Stop HAProxy at once (SIGTERM): drain the versions first to lose no request."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=wait_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=wait_seconds)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
