"""A version group: the ``keel serve`` processes of one release, behind one HAProxy backend.

A group is named (``blue``, ``g-<deployment>``…) and each of its processes is
one HAProxy server ``NAME-i``. Its life, as the orchestrator drives it:

1. **start** — every process from the group's :class:`~keel.deploy.processes.Source`
   on its own port; :meth:`VersionGroup.wait_ready` polls each one's ``/ready``
   and then checks ``/version``: a group that runs another release than the one
   being deployed never takes a request.
2. **register** — its servers are added to the running HAProxy through the
   runtime API (``add server`` at weight 0, health checks on ``/ready``), no
   reload.
3. **weights** — :class:`GroupRouter` gives each group its share, spread over
   its servers.
4. **retire** — weight 0 and ``state drain``; once HAProxy counts no current
   session on any of its servers (``show stat``'s ``scur``) each process gets
   SIGTERM, which ``keel serve`` answers by draining; then its servers are
   deleted from HAProxy.

:class:`GroupMetrics` sums the request histogram of all the group's processes
into one ``/metrics`` text, which is what the canary analysis reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from keel.deploy.canary import REQUEST_HISTOGRAM
from keel.deploy.haproxy import BACKEND, MAX_WEIGHT, SERVER_CHECK, HAProxyCommandFailed, RuntimeApi
from keel.deploy.processes import (
    ProcessError,
    ServeProcess,
    Source,
    is_ours,
    start_serve,
    stop_process,
)
from keel.deploy.release import Release


class GroupNotReady(ProcessError):
    title = "Version group not ready"


@dataclass(frozen=True, slots=True)
class VersionGroup:
    """The processes of one version: enough, written down, to find and stop them later."""

    name: str
    source: Source
    processes: tuple[ServeProcess, ...]

    def server_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(len(self.processes))]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source.as_dict(),
            "processes": [process.as_dict() for process in self.processes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> VersionGroup:
        source = data["source"]
        processes = data["processes"]
        if not isinstance(source, Mapping) or not isinstance(processes, list):
            raise ProcessError("a version group record needs its source and processes")
        return cls(
            name=str(data["name"]),
            source=Source.from_dict(source),
            processes=tuple(ServeProcess.from_dict(item) for item in processes),
        )


def start_group(
    name: str,
    source: Source,
    ports: Sequence[int],
    *,
    env: Mapping[str, str],
    workdir: Path,
    workers: int = 1,
) -> VersionGroup:
    """Start one ``keel serve`` per port (not waiting: see :func:`wait_ready`)."""
    processes = []
    for port in ports:
        process = start_serve(
            source,
            port,
            env=env,
            log_path=workdir / "logs" / f"{name}-{port}.log",
            cwd=workdir,
            workers=workers,
        )
        processes.append(process)
    return VersionGroup(name, source, tuple(processes))


async def wait_ready(
    group: VersionGroup,
    release: Release | None = None,
    *,
    timeout_seconds: float = 60.0,
    poll_seconds: float = 0.1,
) -> None:
    """Every process answers ``/ready`` 200, and ``/version`` names ``release`` (when given).

    Only the version and migration head are compared: a build stamps its git sha
    or not, and the deployment's sha may be given by hand.
    """
    deadline = time.monotonic() + timeout_seconds
    async with httpx.AsyncClient(timeout=2.0) as client:
        for process in group.processes:
            while True:
                try:
                    if (await client.get(process.url + "/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if not is_ours(process):
                    raise GroupNotReady(f"{group.name}: {process.url} exited before it was ready")
                if time.monotonic() >= deadline:
                    raise GroupNotReady(
                        f"{group.name}: {process.url}/ready did not answer 200 "
                        f"within {timeout_seconds:g} s"
                    )
                await asyncio.sleep(poll_seconds)
            if release is None:
                continue
            running = (await client.get(process.url + "/version")).json().get("release", {})
            wanted = {"version": release.version, "migration_head": release.migration_head}
            found = {key: running.get(key) for key in wanted}
            if found != wanted:
                raise GroupNotReady(f"{group.name}: {process.url} runs {found}, not {wanted}")


def stop_group(group: VersionGroup, *, wait_seconds: float = 30.0) -> None:
    """SIGTERM every process of the group (each drains), SIGKILL the ones that outstay."""
    for process in group.processes:
        stop_process(process, wait_seconds=wait_seconds)


# --- the group in HAProxy -----------------------------------------------------


def register(api: RuntimeApi, group: VersionGroup) -> None:
    """Add the group's servers to the running HAProxy at weight 0, health-checked as the
    backend says (``option httpchk GET /ready``)."""
    for server, process in zip(group.server_names(), group.processes, strict=True):
        added = api.command(
            f"add server {BACKEND}/{server} {process.host}:{process.port} weight 0 {SERVER_CHECK}"
        )
        if "registered" not in added.lower():
            raise HAProxyCommandFailed(f"add server {server}: {added}")
        for command in (f"enable health {BACKEND}/{server}", f"enable server {BACKEND}/{server}"):
            answer = api.command(command)
            if answer:
                raise HAProxyCommandFailed(f"{command}: {answer}")


def wait_up(
    api: RuntimeApi, group: VersionGroup, *, timeout_seconds: float = 30.0, poll: float = 0.05
) -> None:
    """Wait until HAProxy's own health checks find every server of the group up.

    A server added at runtime is down until its first check passes; giving it all
    the traffic before then (a blue-green switch) would answer 503s.
    """
    names = set(group.server_names())
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        statuses = api.statuses()
        if all(statuses.get(name, "").startswith("UP") for name in names):
            return
        time.sleep(poll)
    raise GroupNotReady(f"{group.name}: HAProxy's checks did not find it up: {api.statuses()}")


def wait_idle(
    api: RuntimeApi, group: VersionGroup, *, timeout_seconds: float = 30.0, poll: float = 0.05
) -> bool:
    """Wait until HAProxy counts no current session on any of the group's servers."""
    names = set(group.server_names())
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        sessions = api.sessions()
        if all(sessions.get(name, 0) == 0 for name in names):
            return True
        time.sleep(poll)
    return False


def retire(
    api: RuntimeApi,
    group: VersionGroup,
    *,
    idle_timeout_seconds: float = 30.0,
    stop_wait_seconds: float = 30.0,
) -> None:
    """Weight 0 and drain, wait for its in-flight requests, stop its processes, unregister it."""
    present = set(api.sessions())
    servers = [name for name in group.server_names() if name in present]
    for server in servers:
        api.set_weight(server, 0)
        api.drain(server)
    wait_idle(api, group, timeout_seconds=idle_timeout_seconds)
    stop_group(group, wait_seconds=stop_wait_seconds)
    for server in servers:
        # Another shell's rollback may retire the same group at once: gone is done.
        api.command(f"set server {BACKEND}/{server} state maint")
        answer = api.command(f"del server {BACKEND}/{server}")
        if "deleted" not in answer.lower() and "no such" not in answer.lower():
            raise HAProxyCommandFailed(f"del server {server}: {answer}")


def retire_all(
    api: RuntimeApi,
    groups: Sequence[VersionGroup],
    *,
    idle_timeout_seconds: float = 30.0,
    stop_wait_seconds: float = 30.0,
) -> None:
    """:func:`retire` several groups at once, a thread each: the wait is the longest of their
    drains, not the sum (a canary's end retires the loser and the fresh baseline)."""
    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        retiring = [
            pool.submit(
                retire,
                api,
                group,
                idle_timeout_seconds=idle_timeout_seconds,
                stop_wait_seconds=stop_wait_seconds,
            )
            for group in groups
        ]
    for future in retiring:
        future.result()  # the first failure, once every group has had its turn


def weigh(api: RuntimeApi, group: VersionGroup, percent: int) -> None:
    """Give ``group`` ``percent`` % of new requests, spread over its servers (each gets
    ``percent × 2.56 / servers``, at least 1 when the share is not 0)."""
    servers = group.server_names()
    weight = round(percent * MAX_WEIGHT / 100 / len(servers))
    weight = max(weight, 1) if percent else 0
    for server in servers:
        api.set_weight(server, weight)
        if weight:
            api.ready(server)


def route(api: RuntimeApi, shares: Sequence[tuple[VersionGroup, int]]) -> None:
    """Set each group's share, the largest first: the first command gives a group a weight
    above 0 that it keeps, so the groups are never all at 0 and no request meets an empty
    backend, whatever the weights were before."""
    for group, percent in sorted(shares, key=lambda share: -share[1]):
        weigh(api, group, percent)


def send_back(api: RuntimeApi, baseline: VersionGroup, *others: VersionGroup) -> None:
    """All new requests to ``baseline``, none to the ``others`` still registered in HAProxy.

    Another shell's rollback may have retired some of them already: a group whose
    servers are gone is skipped rather than failing the way back.
    """
    present = set(api.sessions())
    registered = [group for group in others if set(group.server_names()) & present]
    route(api, [(baseline, 100), *((group, 0) for group in registered)])


@dataclass
class GroupRouter:
    """Two groups' shares of new requests, set live through HAProxy's runtime API.

    A group's percentage is spread over its servers (:func:`weigh`). As in
    :class:`~keel.deploy.rollout.HAProxyRouter`, the group taking the larger share
    is set first (:func:`route`), so the two are never both at 0.
    """

    api: RuntimeApi
    baseline: VersionGroup
    canary: VersionGroup
    splits: list[int] = field(default_factory=list)

    def split(self, canary_percent: int) -> None:
        if not 0 <= canary_percent <= 100:
            raise ValueError("a percentage is between 0 and 100")
        route(self.api, [(self.canary, canary_percent), (self.baseline, 100 - canary_percent)])
        self.splits.append(canary_percent)

    def drain_baseline(self) -> None:
        drain(self.api, self.baseline)


def drain(api: RuntimeApi, group: VersionGroup) -> None:
    """No new requests to ``group`` (weight 0 and ``state drain``); its in-flight ones finish."""
    for server in group.server_names():
        api.set_weight(server, 0)
        api.drain(server)


class GroupMetrics:
    """The request histogram of all of a group's processes, summed into one ``/metrics`` text."""

    def __init__(self, group: VersionGroup, *, timeout: float = 5.0) -> None:
        self.urls = [process.url + "/metrics" for process in group.processes]
        self.timeout = timeout

    async def scrape(self) -> str:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            texts = []
            for url in self.urls:
                response = await client.get(url)
                response.raise_for_status()
                texts.append(response.text)
        return texts[0] if len(texts) == 1 else merge_histograms(texts)


def merge_histograms(texts: Sequence[str]) -> str:
    """One exposition of the request histogram whose every series is the sum over ``texts``."""
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name != REQUEST_HISTOGRAM:
                continue
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                summed[key] = summed.get(key, 0.0) + sample.value
    lines = [f"# TYPE {REQUEST_HISTOGRAM} histogram"]
    for (name, labels), value in sorted(summed.items()):
        rendered = ",".join(f'{key}="{label}"' for key, label in labels)
        lines.append(f"{name}{{{rendered}}} {value!r}")
    return "\n".join(lines) + "\n"
