"""A deployment on one machine: version groups of ``keel serve`` behind a running HAProxy.

:class:`LocalDeployment` carries one deployment from ``created`` to its end:

1. start the new release as its own :class:`~keel.deploy.groups.VersionGroup`
   on its own ports, wait for every process' ``/ready`` and for ``/version`` to
   name the release (a group that cannot start fails the deployment, having
   served no one);
2. run the pre-checks, with a smoke test of each new process added;
3. wait at the approval gate (polling the database, so an approval from any
   shell opens it; a rollback there ends it);
4. register the group in HAProxy and walk it (canary steps with analysis, or
   the blue-green switch); a canary is compared with a fresh baseline, a new
   group of the production release started for the walk
   (:mod:`keel.deploy.fresh_baseline`);
5. retire the group that lost: promoted — the old one is drained (weight 0, no
   current session left in HAProxy) and stopped by SIGTERM, which ``keel
   serve`` answers by draining; rolled back — the new one, the same way. The
   fresh baseline is retired either way;
6. promoted, with a :class:`~keel.deploy.post_promotion.ContractStep`: the
   release's contract revisions, once every old process (the fresh baseline's
   too) has stopped.

Everything another shell needs in order to act is in the deployment's record
(:class:`DeploymentRecord`): the admin socket, every group's pids and ports, and
the walk's progress; what serves now is the environment's :class:`LiveRecord`
(its registered front and live group). Both are kept in a :class:`RecordStore`:
the database (:class:`keel.deploy.records.DatabaseRecords`, found from any
shell by environment or deployment id) or, for working directories made
before, JSON files under the working directory (:class:`FileRecords`).
``keel deploy rollback`` reads the record to send all traffic back to the
baseline and retire the new group at once, without waiting for the
orchestrator's next poll — or when the orchestrator is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from keel.clock import SYSTEM_CLOCK, Clock
from keel.deploy.bluegreen import BlueGreenSwitch, SwitchPlan
from keel.deploy.canary import Analysis
from keel.deploy.fresh_baseline import (
    FreshBaselinePlan,
    FreshBaselineRouter,
    production_release,
)
from keel.deploy.fronts import Front, this_host
from keel.deploy.groups import (
    GroupMetrics,
    GroupNotReady,
    GroupRouter,
    VersionGroup,
    register,
    retire_all,
    send_back,
    start_group,
    stop_group,
    wait_ready,
    wait_up,
)
from keel.deploy.haproxy import (
    MAX_WEIGHT,
    HAProxy,
    HAProxyUnavailable,
    RuntimeApi,
    Server,
    haproxy_binary,
)
from keel.deploy.post_promotion import ContractStep
from keel.deploy.prechecks import PreCheck, SmokeTest, run_pre_checks
from keel.deploy.processes import ProcessError, Source, launch, start_mark
from keel.deploy.rollout import (
    CanaryPlan,
    CanaryRollout,
    HttpSyntheticTraffic,
    RolloutWalk,
    Sleep,
    TrafficRouter,
)
from keel.deploy.states import DeploymentState, IllegalTransition
from keel.deploy.store import SYSTEM_ACTOR, Deployment, DeploymentStore, Strategy
from keel.errors import KeelError

_RECORDS = "deployments"
SERVED_BY_HEADER = "X-Keel-Server"
"""HAProxy names the server that answered in this response header."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Step:
    """Where a walk is: the new version's share and the last analysis at it."""

    percent: int
    verdict: str | None = None
    canary_requests: int | None = None
    baseline_requests: int | None = None
    reasons: tuple[str, ...] = ()
    analyses: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "verdict": self.verdict,
            "canary_requests": self.canary_requests,
            "baseline_requests": self.baseline_requests,
            "reasons": list(self.reasons),
            "analyses": self.analyses,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            percent=int(data["percent"]),
            verdict=data.get("verdict"),
            canary_requests=data.get("canary_requests"),
            baseline_requests=data.get("baseline_requests"),
            reasons=tuple(data.get("reasons") or ()),
            analyses=int(data.get("analyses") or 0),
        )


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """What one deployment started and where it stands, for any shell to read."""

    deployment_id: str
    admin_socket: Path
    baseline: VersionGroup
    candidate: VersionGroup | None = None
    step: Step | None = None
    retired: tuple[str, ...] = ()
    fresh_baseline: VersionGroup | None = None

    def groups(self) -> dict[str, VersionGroup]:
        """The groups it holds by role: the name of the field holding each (baseline, …)."""
        held = {item.name: getattr(self, item.name) for item in fields(self)}
        return {role: group for role, group in held.items() if isinstance(group, VersionGroup)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "admin_socket": str(self.admin_socket),
            "baseline": self.baseline.as_dict(),
            "candidate": self.candidate.as_dict() if self.candidate else None,
            "step": self.step.as_dict() if self.step else None,
            "retired": list(self.retired),
            "fresh_baseline": self.fresh_baseline.as_dict() if self.fresh_baseline else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentRecord:
        fresh = data.get("fresh_baseline")  # absent from records older than fresh baselines
        return cls(
            deployment_id=str(data["deployment_id"]),
            admin_socket=Path(data["admin_socket"]),
            baseline=VersionGroup.from_dict(data["baseline"]),
            candidate=VersionGroup.from_dict(data["candidate"]) if data["candidate"] else None,
            step=Step.from_dict(data["step"]) if data.get("step") else None,
            retired=tuple(data.get("retired") or ()),
            fresh_baseline=VersionGroup.from_dict(fresh) if fresh else None,
        )


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """What serves now: HAProxy's admin socket, the live group, and the registered front
    (None in a working directory's ``live.json`` from before fronts were registered)."""

    admin_socket: Path
    group: VersionGroup
    haproxy_pid: int | None = None
    front: Front | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "admin_socket": str(self.admin_socket),
            "group": self.group.as_dict(),
            "haproxy_pid": self.haproxy_pid,
            "front": self.front.as_dict() if self.front else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveRecord:
        pid = data.get("haproxy_pid")
        front = Front.from_dict(data["front"]) if data.get("front") else None
        return cls(Path(data["admin_socket"]), VersionGroup.from_dict(data["group"]), pid, front)


def _replace_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON in one rename, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
    temporary.replace(path)


def write_live(workdir: Path, live: LiveRecord) -> None:
    _replace_file(workdir / "live.json", live.as_dict())


def read_live(workdir: Path) -> LiveRecord | None:
    try:
        return LiveRecord.from_dict(json.loads((workdir / "live.json").read_text("utf-8")))
    except FileNotFoundError:
        return None


def record_path(workdir: Path, deployment_id: str) -> Path:
    return workdir / _RECORDS / f"{deployment_id}.json"


def write_record(workdir: Path, record: DeploymentRecord) -> None:
    _replace_file(record_path(workdir, record.deployment_id), record.as_dict())


def read_record(workdir: Path, deployment_id: str) -> DeploymentRecord | None:
    path = record_path(workdir, deployment_id)
    try:
        return DeploymentRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


class RecordStore(Protocol):
    """Where deployment records and the environment's live record are kept.

    Two stores: the database (:class:`keel.deploy.records.DatabaseRecords`) and a
    working directory's JSON files (:class:`FileRecords`, which holds one live
    record whatever the environment).
    """

    async def read_live(self, environment: str) -> LiveRecord | None: ...

    async def write_live(self, environment: str, live: LiveRecord) -> None: ...

    async def read_record(self, deployment_id: str) -> DeploymentRecord | None: ...

    async def write_record(self, record: DeploymentRecord) -> None: ...


@dataclass(frozen=True, slots=True)
class FileRecords:
    """The records as JSON files under ``workdir`` (``live.json``, ``deployments/ID.json``)."""

    workdir: Path

    async def read_live(self, environment: str) -> LiveRecord | None:
        return read_live(self.workdir)

    async def write_live(self, environment: str, live: LiveRecord) -> None:
        write_live(self.workdir, live)

    async def read_record(self, deployment_id: str) -> DeploymentRecord | None:
        return read_record(self.workdir, deployment_id)

    async def write_record(self, record: DeploymentRecord) -> None:
        write_record(self.workdir, record)


class _RecordWriter:
    """Writes a deployment's record to its store in the order it changed.

    From the event loop (the walk reports progress through a plain callback) a
    write is queued behind the previous one without blocking the loop; from a
    thread (draining and stopping groups) the thread waits until it is written.
    Each write is the whole record, so one that failed is made good by the next;
    :meth:`flush` waits for the last and raises its error.
    """

    def __init__(self, records: RecordStore) -> None:
        self.records = records
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: asyncio.Task[None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def save(self, record: DeploymentRecord) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the record writer is bound to the deployment's loop first")
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._queue(loop, record)
        else:
            asyncio.run_coroutine_threadsafe(self._written(record), loop).result()

    def _queue(
        self, loop: asyncio.AbstractEventLoop, record: DeploymentRecord
    ) -> asyncio.Task[None]:
        self._last = loop.create_task(self._write(self._last, record))
        return self._last

    async def _written(self, record: DeploymentRecord) -> None:
        await self._queue(asyncio.get_running_loop(), record)

    async def _write(self, previous: asyncio.Task[None] | None, record: DeploymentRecord) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        await self.records.write_record(record)

    async def flush(self) -> None:
        if self._last is not None:
            await self._last


def roll_back_traffic(record: DeploymentRecord, *, stop_wait_seconds: float = 30.0) -> None:
    """All traffic to the baseline now, then the new group and the fresh baseline (if one
    was started) drained and stopped (by pid)."""
    if record.candidate is None:
        return
    api = RuntimeApi(record.admin_socket)
    started = [record.candidate, *([record.fresh_baseline] if record.fresh_baseline else [])]
    send_back(api, record.baseline, *started)
    retire_all(api, started, stop_wait_seconds=stop_wait_seconds)


class _Walk(Protocol):
    progress: Callable[[int, Analysis | None], None] | None

    async def run(self) -> Deployment: ...


@dataclass(frozen=True, slots=True)
class LocalPlan:
    """How the new group is run and how long each wait may take."""

    ports: Sequence[int]
    env: Mapping[str, str]
    workers: int = 1
    ready_timeout_seconds: float = 60.0
    approval_poll_seconds: float = 0.5
    approval_timeout_seconds: float = 3600.0
    idle_timeout_seconds: float = 30.0
    stop_wait_seconds: float = 30.0
    canary: CanaryPlan = field(default_factory=CanaryPlan)
    switch: SwitchPlan = field(default_factory=SwitchPlan)
    pre_checks: Sequence[PreCheck] = ()
    synthetic_path: str | None = None
    """While a canary step is inconclusive, GET this path on each group's first process."""
    fresh_baseline: FreshBaselinePlan | None = field(default_factory=FreshBaselinePlan)
    """A canary is compared with a fresh group of the production release; ``None``: with
    the production group itself."""

    def __post_init__(self) -> None:
        fresh = self.fresh_baseline
        if fresh is not None and fresh.ports and len(fresh.ports) != len(self.ports):
            raise ValueError("the fresh baseline needs as many ports as the new group")


class LocalDeployment:
    def __init__(
        self,
        store: DeploymentStore,
        deployment_id: str,
        *,
        api: RuntimeApi,
        baseline: VersionGroup,
        source: Source,
        plan: LocalPlan,
        workdir: Path,
        records: RecordStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
        contract: ContractStep | None = None,
    ) -> None:
        """``workdir`` holds the new group's logs; ``records`` is where the record is kept
        (by default the JSON files under ``workdir``)."""
        self.store = store
        self.contract = contract
        self.deployment_id = deployment_id
        self.api = api
        self.source = source
        self.plan = plan
        self.workdir = workdir
        self.clock = clock
        self.sleep = sleep
        self.records = records if records is not None else FileRecords(workdir)
        self._writer = _RecordWriter(self.records)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.record = DeploymentRecord(deployment_id, api.path, baseline)

    @property
    def live(self) -> VersionGroup:
        """The group that serves once the deployment has ended (the winner)."""
        return self.record.baseline

    async def run(self) -> Deployment:
        """From ``created`` to ``promoted``, ``rolled_back`` or ``failed``; the loser retired."""
        self._loop = asyncio.get_running_loop()
        self._writer.bind(self._loop)
        try:
            deployment = await self._run()
        except BaseException:
            with contextlib.suppress(Exception):  # the error that ended it is the one to see
                await self._writer.flush()
            raise
        await self._writer.flush()
        return deployment

    async def _run(self) -> Deployment:
        deployment = await self.store.get(self.deployment_id)
        if not deployment.active:
            raise IllegalTransition(f"deployment {deployment.id} has ended: {deployment.state}")
        name = f"g{deployment.id[-8:].lower()}"
        candidate = start_group(
            name,
            self.source,
            self.plan.ports,
            env=self.plan.env,
            workdir=self.workdir,
            workers=self.plan.workers,
        )
        self._save(candidate=candidate)
        fresh_plan = self._fresh_plan(deployment)
        try:
            if fresh_plan is not None and not deployment.required_approvals:
                # No gate to wait at: the walk follows the pre-checks at once, so the fresh
                # baseline starts with the canary — as old as it, its start-up overlapping.
                self._launch_fresh_baseline(deployment, fresh_plan)
            await wait_ready(
                candidate, deployment.release, timeout_seconds=self.plan.ready_timeout_seconds
            )
        except (GroupNotReady, ProcessError, httpx.HTTPError) as error:
            started = [candidate, *self._fresh_baselines()]
            for group in started:
                await asyncio.to_thread(stop_group, group, wait_seconds=self.plan.stop_wait_seconds)
            self._save(retired=tuple(group.name for group in started))
            return await self._end(
                DeploymentState.FAILED, f"the new version did not start: {error}"
            )
        try:
            deployment = await self._checked(deployment, candidate)
            deployment = await self._wait_for_gate(deployment)
            if deployment.state is DeploymentState.ROLLING:
                register(self.api, candidate)
                await asyncio.to_thread(
                    wait_up, self.api, candidate, timeout_seconds=self.plan.ready_timeout_seconds
                )
                deployment = await self._roll(deployment, candidate)
        except BaseException:
            # Whatever broke (or cancelled) the walk, the new groups are not left serving.
            await asyncio.to_thread(self._abandon, candidate)
            raise
        # The groups of the old release: none may serve once the contract revisions run.
        old = [self.record.baseline]
        if self.record.fresh_baseline is not None:
            old.append(self.record.fresh_baseline)
        await asyncio.to_thread(self._retire, deployment, candidate)
        if deployment.state is DeploymentState.PROMOTED and self.contract is not None:
            deployment = await self.contract.run(deployment, retired=old)
        return deployment

    async def _checked(self, deployment: Deployment, candidate: VersionGroup) -> Deployment:
        """Pre-checks with a smoke test of each new process; when ``keel deploy create``
        already ran the pre-checks, the smoke tests alone (a failure rolls it back)."""
        smoke = [SmokeTest(process.url + "/version") for process in candidate.processes]
        if deployment.state is DeploymentState.CREATED:
            checks = [*self.plan.pre_checks, *smoke]
            deployment, _ = await run_pre_checks(self.store, self.deployment_id, checks)
            return deployment
        for check in smoke:
            result = await check.run(deployment)
            if not result.ok:
                reason = f"smoke test {result.name} failed: {result.detail}"
                return await self._end(DeploymentState.ROLLED_BACK, reason)
        return deployment

    async def _wait_for_gate(self, deployment: Deployment) -> Deployment:
        """Poll until the approvals open the gate (``rolling``), a rollback ends it, or timeout."""
        started = self.clock.monotonic()
        while deployment.state is DeploymentState.AWAITING_APPROVAL:
            if self.clock.monotonic() - started >= self.plan.approval_timeout_seconds:
                reason = f"not approved within {self.plan.approval_timeout_seconds:g} s"
                return await self._end(DeploymentState.ROLLED_BACK, reason)
            await self.sleep(self.plan.approval_poll_seconds)
            deployment = await self.store.get(self.deployment_id)
        return deployment

    async def _roll(self, deployment: Deployment, candidate: VersionGroup) -> Deployment:
        """The walk; a canary's compared with a fresh baseline, unless the plan says otherwise.

        A fresh baseline that cannot start fails the deployment before any traffic moves:
        judging the canary against production instead would bring back the warm-up bias
        the thresholds are set without (``--baseline production`` chooses that knowingly).
        """
        router: TrafficRouter = GroupRouter(self.api, self.record.baseline, candidate)
        compared = self.record.baseline
        fresh_plan = self._fresh_plan(deployment)
        if fresh_plan is not None:
            try:
                compared = await self._start_fresh_baseline(deployment, fresh_plan)
            except (KeelError, ValueError, httpx.HTTPError) as error:
                reason = f"the fresh baseline did not start: {error}"
                return await self._end(DeploymentState.FAILED, reason)
            router = FreshBaselineRouter(
                self.api,
                production=self.record.baseline,
                baseline=compared,
                canary=candidate,
                max_percent=fresh_plan.max_percent,
            )
        return await self._walk(deployment, candidate, router, compared).run()

    def _fresh_plan(self, deployment: Deployment) -> FreshBaselinePlan | None:
        """How the fresh baseline runs, for a canary that is compared with one."""
        return self.plan.fresh_baseline if deployment.strategy is Strategy.CANARY else None

    def _launch_fresh_baseline(
        self, deployment: Deployment, plan: FreshBaselinePlan
    ) -> VersionGroup:
        """Start the production release as a new group (not waiting for it) and record it at
        once, so whatever happens next — it never gets ready, the walk ends, a rollback from
        another shell — retires it like the canary."""
        production = self.record.baseline
        fresh = start_group(
            f"b{deployment.id[-8:].lower()}",
            production.source,
            plan.ports_for(len(self.plan.ports)),
            env=self.plan.env if plan.env is None else plan.env,
            workdir=self.workdir,
            workers=self.plan.workers,
        )
        self._save(fresh_baseline=fresh)
        return fresh

    async def _start_fresh_baseline(
        self, deployment: Deployment, plan: FreshBaselinePlan
    ) -> VersionGroup:
        """The fresh baseline ready — its ``/version`` naming the release production runs —
        and in HAProxy at weight 0; started now unless it started with the canary."""
        release = await production_release(self.record.baseline)
        fresh = self.record.fresh_baseline or self._launch_fresh_baseline(deployment, plan)
        await wait_ready(fresh, release, timeout_seconds=self.plan.ready_timeout_seconds)
        register(self.api, fresh)
        await asyncio.to_thread(
            wait_up, self.api, fresh, timeout_seconds=self.plan.ready_timeout_seconds
        )
        return fresh

    def _walk(
        self,
        deployment: Deployment,
        candidate: VersionGroup,
        router: TrafficRouter,
        compared: VersionGroup,
    ) -> _Walk:
        walk: RolloutWalk
        if deployment.strategy is Strategy.CANARY:
            walk = CanaryRollout(
                self.store,
                self.deployment_id,
                router,
                canary=GroupMetrics(candidate),
                baseline=GroupMetrics(compared),
                plan=self.plan.canary,
                clock=self.clock,
                sleep=self.sleep,
                synthetic=_synthetic(self.plan.synthetic_path, candidate, compared),
            )
        else:
            walk = BlueGreenSwitch(
                self.store,
                self.deployment_id,
                router,
                probe=_GroupReadiness(candidate),
                plan=self.plan.switch,
                clock=self.clock,
                sleep=self.sleep,
            )
        walk.progress = self._progress
        return walk

    def _progress(self, percent: int, analysis: Analysis | None) -> None:
        before = self.record.step
        if analysis is None:
            step = Step(percent)
        else:
            step = Step(
                percent,
                verdict=analysis.verdict.value,
                canary_requests=analysis.canary.requests,
                baseline_requests=analysis.baseline.requests,
                reasons=analysis.reasons,
                analyses=(before.analyses if before and before.percent == percent else 0) + 1,
            )
        self._save(step=step)

    def _retire(self, deployment: Deployment, candidate: VersionGroup) -> None:
        old, new = self.record.baseline, candidate
        loser = old if deployment.state is DeploymentState.PROMOTED else new
        fresh = self._fresh_baselines()
        if deployment.state is not DeploymentState.PROMOTED:
            send_back(self.api, old, new, *fresh)
        retire_all(
            self.api,
            [loser, *fresh],
            idle_timeout_seconds=self.plan.idle_timeout_seconds,
            stop_wait_seconds=self.plan.stop_wait_seconds,
        )
        self._save(retired=(*self.record.retired, *(group.name for group in fresh)))
        if deployment.state is DeploymentState.PROMOTED:
            self._save(baseline=new, candidate=None, retired=(*self.record.retired, old.name))
            # The front recorded for the environment now serves the new group (in the
            # database it does from the move to promoted on; this is the files' way).
            known = self._blocking(self.records.read_live(deployment.environment))
            if known is not None:
                live = replace(known, group=new)
                self._blocking(self.records.write_live(deployment.environment, live))
        else:
            self._save(retired=(*self.record.retired, new.name))

    def _abandon(self, candidate: VersionGroup) -> None:
        """All traffic to the baseline (if the new groups had any) and the new groups retired."""
        started = [candidate, *self._fresh_baselines()]
        try:
            send_back(self.api, self.record.baseline, *started)
            retire_all(self.api, started, stop_wait_seconds=self.plan.stop_wait_seconds)
        finally:
            for group in started:
                stop_group(group, wait_seconds=self.plan.stop_wait_seconds)
            self._save(retired=(*self.record.retired, *(group.name for group in started)))

    def _fresh_baselines(self) -> list[VersionGroup]:
        """The fresh baseline this deployment started and has not yet retired (none or one)."""
        fresh = self.record.fresh_baseline
        return [fresh] if fresh is not None and fresh.name not in self.record.retired else []

    async def _end(self, target: DeploymentState, reason: str) -> Deployment:
        """End the deployment; an operator who ended it first has the last word."""
        with contextlib.suppress(IllegalTransition):
            await self.store.move(self.deployment_id, target, actor=SYSTEM_ACTOR, reason=reason)
        return await self.store.get(self.deployment_id)

    async def stored(self) -> DeploymentRecord | None:
        """The record as its store holds it once every change saved so far is written (the
        walk's saves are queued behind each other, not awaited where they are made)."""
        await self._writer.flush()
        return await self.records.read_record(self.deployment_id)

    def _save(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)
        self._writer.save(self.record)

    def _blocking(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the deployment's loop from one of its threads, and wait for it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the deployment is not running")
        return asyncio.run_coroutine_threadsafe(work, loop).result()


def _synthetic(
    path: str | None, canary: VersionGroup, baseline: VersionGroup
) -> HttpSyntheticTraffic | None:
    """Synthetic requests at one process of each group: the analysis merges a group's
    processes' metrics, so one process taking them all still counts for the group."""
    if path is None:
        return None
    return HttpSyntheticTraffic(canary.processes[0].url + path, baseline.processes[0].url + path)


class _GroupReadiness:
    """Every process of the group answers ``/ready`` 200."""

    def __init__(self, group: VersionGroup) -> None:
        self.urls = [process.url + "/ready" for process in group.processes]

    async def ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                for url in self.urls:
                    if (await client.get(url)).status_code != 200:
                        return False
        except httpx.HTTPError:
            return False
        return True


def open_front(
    group: VersionGroup,
    *,
    environment: str,
    workdir: Path,
    bind_port: int,
    bind_host: str = "127.0.0.1",
    wait_seconds: float = 10.0,
    clock: Clock = SYSTEM_CLOCK,
) -> LiveRecord:
    """Start HAProxy detached in front of ``group`` (all its weight): the environment's
    front and live group, for the caller to register (:meth:`RecordStore.write_live`).

    Detached like the groups, so it keeps serving after the command that started it
    has exited; deployments then change its servers through the admin socket only.
    """
    servers = [
        Server(name, process.host, process.port, weight=MAX_WEIGHT)
        for name, process in zip(group.server_names(), group.processes, strict=True)
    ]
    front = HAProxy(
        servers,
        workdir=workdir,
        bind_port=bind_port,
        bind_host=bind_host,
        health_path="/ready",
        served_by_header=SERVED_BY_HEADER,
    )
    front.config_path.parent.mkdir(parents=True, exist_ok=True)
    front.config_path.write_text(front.config, encoding="utf-8")
    binary = haproxy_binary()
    pid = launch(
        [binary, "-db", "-f", str(front.config_path)],
        env=os.environ,
        cwd=workdir,
        log_path=front.log_path,
    )
    deadline = time.monotonic() + wait_seconds
    while not front.answers():
        if time.monotonic() >= deadline:
            raise HAProxyUnavailable(f"haproxy did not come up in {wait_seconds:g} s")
        time.sleep(0.05)
    mark = start_mark(pid)
    if mark is None:
        raise HAProxyUnavailable(f"haproxy exited at once: see {front.log_path}")
    registered = Front(
        environment=environment,
        host_name=this_host(),
        workdir=workdir,
        admin_socket=front.admin_socket,
        config_path=front.config_path,
        bind_host=bind_host,
        bind_port=bind_port,
        pid=pid,
        start_mark=mark,
        started_at=clock.now(),
    )
    return LiveRecord(front.admin_socket, group, pid, registered)
